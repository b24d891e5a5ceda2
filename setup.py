"""Build tidelog's one optional C extension; everything else is in pyproject.toml.

``tidelog.storage._crc32c`` (record checksums with a cheap call path, see
tidelog/storage/checksums.py) is built when a C compiler is there; ``optional``
lets ``pip install .`` succeed without one, and tidelog then uses the same
functions in Python.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("tidelog.storage._crc32c", ["tidelog/storage/_crc32c.c"], optional=True),
    ]
)
