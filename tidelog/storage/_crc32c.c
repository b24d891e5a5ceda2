/*
 * tidelog.storage._crc32c: CRC-32C for record checksums, with a cheap call path.
 *
 * Optional compiled part of tidelog/storage/checksums.py, which has the same two
 * functions in Python (on google_crc32c) and uses them when this module is not
 * built. Why it exists: a record format version 2 record carries a CRC-32C, and
 * an append computes one per record. Every CRC-32C binding on PyPI parses its
 * arguments with PyArg_ParseTuple (a tuple built and parsed per call), about
 * 1,100 instructions around a CRC of a 100-byte payload that takes under 100;
 * these functions take METH_FASTCALL arguments and build the whole record in
 * one allocation (docs/storage.md, "Cost").
 *
 * CRCs here are *raw*: initial value ``state``, no final XOR (the convention of
 * the record format: the raw CRC-32C of a whole record, trailer included, is 0).
 *
 *   crc32c(state, data) -> int
 *       the raw CRC-32C of ``data`` continuing from ``state`` (0 to start).
 *   seal(head, state, payload) -> bytes
 *       head + payload + the raw CRC-32C of both as 4 bytes little-endian,
 *       where ``state`` is crc32c(0, head) (callers keep it per head).
 *
 * The CRC uses the SSE 4.2 crc32 instruction where the CPU has it (checked once,
 * at import), else a portable slicing-by-8 table (any CPU, any byte order).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define POLY 0x82F63B78u /* CRC-32C (Castagnoli), reflected */

static uint32_t table[8][256];

static void
make_tables(void)
{
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = n;
        for (int k = 0; k < 8; k++) {
            c = (c & 1) ? (c >> 1) ^ POLY : c >> 1;
        }
        table[0][n] = c;
    }
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = table[0][n];
        for (int k = 1; k < 8; k++) {
            c = table[0][c & 0xff] ^ (c >> 8);
            table[k][n] = c;
        }
    }
}

static uint32_t
crc_table(uint32_t crc, const unsigned char *p, size_t n)
{
    while (n >= 8) {
        crc ^= (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
        crc = table[7][crc & 0xff] ^ table[6][(crc >> 8) & 0xff] ^ table[5][(crc >> 16) & 0xff] ^
              table[4][crc >> 24] ^ table[3][p[4]] ^ table[2][p[5]] ^ table[1][p[6]] ^ table[0][p[7]];
        p += 8;
        n -= 8;
    }
    while (n--) {
        crc = table[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
    }
    return crc;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <nmmintrin.h>
#define HAVE_SSE42_PATH 1

__attribute__((target("sse4.2"))) static uint32_t
crc_sse42(uint32_t crc, const unsigned char *p, size_t n)
{
    uint64_t c = crc;
    while (n >= 8) {
        uint64_t word;
        memcpy(&word, p, 8);
        c = _mm_crc32_u64(c, word);
        p += 8;
        n -= 8;
    }
    crc = (uint32_t)c;
    while (n--) {
        crc = _mm_crc32_u8(crc, *p++);
    }
    return crc;
}
#endif

static uint32_t (*crc_fn)(uint32_t, const unsigned char *, size_t) = crc_table;

/* The CRC state argument: an int from 0 to 2**32-1. Returns -1 on error. */
static int
get_state(PyObject *value, uint32_t *state)
{
    unsigned long number = PyLong_AsUnsignedLong(value);
    if (number == (unsigned long)-1 && PyErr_Occurred()) {
        return -1;
    }
    if (number > 0xFFFFFFFFul) {
        PyErr_SetString(PyExc_OverflowError, "a CRC state is 0 to 2**32-1");
        return -1;
    }
    *state = (uint32_t)number;
    return 0;
}

static PyObject *
crc32c(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    uint32_t state;
    Py_buffer view;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "crc32c(state, data) takes 2 positional arguments");
        return NULL;
    }
    if (get_state(args[0], &state) < 0) {
        return NULL;
    }
    if (PyBytes_CheckExact(args[1])) {
        return PyLong_FromUnsignedLong(crc_fn(
            state, (const unsigned char *)PyBytes_AS_STRING(args[1]), (size_t)PyBytes_GET_SIZE(args[1])));
    }
    if (PyObject_GetBuffer(args[1], &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    state = crc_fn(state, (const unsigned char *)view.buf, (size_t)view.len);
    PyBuffer_Release(&view);
    return PyLong_FromUnsignedLong(state);
}

static PyObject *
seal(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    uint32_t state;
    Py_buffer view;
    const unsigned char *payload;
    Py_ssize_t head_size, size;
    int release = 0;
    PyObject *out;
    unsigned char *p;

    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "seal(head, state, payload) takes 3 positional arguments");
        return NULL;
    }
    if (!PyBytes_Check(args[0])) {
        PyErr_Format(PyExc_TypeError, "seal() head must be bytes, not %.100s", Py_TYPE(args[0])->tp_name);
        return NULL;
    }
    if (get_state(args[1], &state) < 0) {
        return NULL;
    }
    if (PyBytes_CheckExact(args[2])) {
        payload = (const unsigned char *)PyBytes_AS_STRING(args[2]);
        size = PyBytes_GET_SIZE(args[2]);
    }
    else {
        if (PyObject_GetBuffer(args[2], &view, PyBUF_SIMPLE) < 0) {
            return NULL;
        }
        payload = (const unsigned char *)view.buf;
        size = view.len;
        release = 1;
    }
    head_size = PyBytes_GET_SIZE(args[0]);
    if (size > PY_SSIZE_T_MAX - head_size - 4) {
        PyErr_SetString(PyExc_OverflowError, "record too large");
        out = NULL;
        goto done;
    }
    out = PyBytes_FromStringAndSize(NULL, head_size + size + 4);
    if (out == NULL) {
        goto done;
    }
    p = (unsigned char *)PyBytes_AS_STRING(out);
    memcpy(p, PyBytes_AS_STRING(args[0]), (size_t)head_size);
    memcpy(p + head_size, payload, (size_t)size);
    state = crc_fn(state, payload, (size_t)size);
    p += head_size + size;
    p[0] = (unsigned char)state;
    p[1] = (unsigned char)(state >> 8);
    p[2] = (unsigned char)(state >> 16);
    p[3] = (unsigned char)(state >> 24);
done:
    if (release) {
        PyBuffer_Release(&view);
    }
    return out;
}

static PyMethodDef methods[] = {
    {"crc32c", (PyCFunction)(void (*)(void))crc32c, METH_FASTCALL,
     "crc32c(state, data) -> int: the raw CRC-32C of data continuing from state (0 to start)."},
    {"seal", (PyCFunction)(void (*)(void))seal, METH_FASTCALL,
     "seal(head, state, payload) -> bytes: head + payload + their raw CRC-32C, 4 bytes "
     "little-endian; state is crc32c(0, head)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "tidelog.storage._crc32c",
    "CRC-32C for record checksums with a cheap call path (see checksums.py).", -1, methods,
};

PyMODINIT_FUNC
PyInit__crc32c(void)
{
    PyObject *module;
    const char *kind = "table";
    make_tables();
#ifdef HAVE_SSE42_PATH
    __builtin_cpu_init();
    if (__builtin_cpu_supports("sse4.2")) {
        crc_fn = crc_sse42;
        kind = "sse4.2";
    }
#endif
    module = PyModule_Create(&module_def);
    if (module == NULL) {
        return NULL;
    }
    if (PyModule_AddStringConstant(module, "IMPLEMENTATION", kind) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
