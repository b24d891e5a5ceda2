"""``tidelog serve`` and ``tidelog config show|reference``.

The named flags of ``serve`` map onto configuration options (see
:mod:`tidelog.options`); ``--set section.name=value`` reaches any option.
``config show`` takes the same flags and prints the effective configuration
with the source of every value.
"""

from __future__ import annotations

import argparse
from typing import Any

from tidelog import config as cfg
from tidelog.cli.common import add_parser


def _flag_type(opt: cfg.Option) -> Any:
    def parse(text: str) -> Any:
        try:
            opt.kind(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return text  # validated again, with provenance, by cfg.load

    return parse


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    import tidelog.options  # noqa: F401  (declares the options)

    parser.add_argument(
        "--config",
        metavar="FILE",
        help=f"TOML configuration file (default ${cfg.CONFIG_ENV} if set)",
    )
    for opt in cfg.OPTIONS.values():
        if opt.flag is None:
            continue
        kwargs: dict[str, Any] = {"dest": f"opt:{opt.key}", "metavar": "VALUE"}
        if opt.kind is cfg.port:
            kwargs["type"] = _flag_type(opt)  # a bad port is a usage error (exit 2)
        parser.add_argument(
            opt.flag, help=f"{opt.doc} (option {opt.key}, default {opt.default})", **kwargs
        )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.NAME=VALUE",
        help="set any option, e.g. --set storage.fsync=interval:100 (repeatable)",
    )


def load_settings(args: argparse.Namespace) -> cfg.Settings:
    flags: dict[str, tuple[Any, str]] = {}
    for text in args.set:
        key, raw = cfg.parse_set(text)
        flags[key] = (raw, f"--set {key}")
    for opt in cfg.OPTIONS.values():
        value = getattr(args, f"opt:{opt.key}", None)
        if opt.flag is not None and value is not None:
            flags[opt.key] = (value, opt.flag)
    return cfg.load(args.config, flags=flags)


def _serve(args: argparse.Namespace) -> int:
    import trio

    from tidelog import logging_setup
    from tidelog.gc_tuning import tune_gc
    from tidelog.server import ServerConfig, serve_until_signalled

    settings = load_settings(args)
    logging_setup.configure(settings["logging.level"], settings["logging.format"])
    config = ServerConfig.from_settings(settings)
    tune_gc()
    trio.run(serve_until_signalled, config)
    return 0


def _show(args: argparse.Namespace) -> int:
    print(cfg.render(load_settings(args)), end="")
    return 0


def _reference(args: argparse.Namespace) -> int:
    import tidelog.options  # noqa: F401

    print(cfg.reference(), end="")
    return 0


def register(commands: Any) -> None:
    serve = add_parser(
        commands,
        "serve",
        "run the broker until SIGTERM/SIGINT",
        "tidelog serve --config /etc/tidelog.toml --storage lmdb:///var/lib/tidelog "
        "--http-port off\n"
        "TIDELOG_MQTT_PORT=1884 tidelog serve --set storage.fsync=interval:50",
    )
    add_config_flags(serve)
    serve.set_defaults(func=_serve)

    config = add_parser(
        commands,
        "config",
        "show the effective configuration",
        "tidelog config show --config tidelog.toml --mqtt-port 1884",
    )
    actions = config.add_subparsers(dest="action", required=True, metavar="ACTION")
    show = add_parser(
        actions,
        "show",
        "print the effective configuration (TOML) with the source of each value",
        "TIDELOG_STORAGE=sqlite://./log.db tidelog config show --config tidelog.toml",
    )
    add_config_flags(show)
    show.set_defaults(func=_show)
    reference = add_parser(
        actions,
        "reference",
        "print every option with its default as Markdown tables",
        "tidelog config reference > options.md",
    )
    reference.set_defaults(func=_reference)
