"""Investigations kept apart from the benchmark suite: tools written to answer one
question (where the time of a message goes, what the record checksum costs, what
an idle connection holds, a change against its baseline), kept because the
numbers in the docs came from them and can be measured again.

    python -m bench.investigations.profile_stages prof.raw --messages 5000
    python -m bench.investigations.read_instructions --build /tmp/ri-log
    python -m bench.investigations.record_format --quick
    python -m bench.investigations.conn_memory --count 1000
    python -m bench.investigations.fanout_check --repeat 3
    python -m bench.investigations.sqlite_log --events 100000

The suite itself (``bench.mqtt_compare``, ``bench.tidelog_only``, ``bench.engine``,
``bench.storage``, ``bench.codec``, ``bench.rest``) is what docs/benchmarks.md
reports run after run.
"""
