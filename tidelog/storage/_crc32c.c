/*
 * tidelog.storage._crc32c: CRC-32C for record checksums, with a cheap call path,
 * and the record hot paths of mesh links and appends.
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
 *
 * It also has four of tidelog/storage/records.py's hot paths, each the twin of a
 * Python function there (tests/storage/test_checksums.py checks one against the
 * other), used when this module is built and TIDELOG_PURE_PYTHON is not set:
 *
 *   restamp(record, timestamp) -> bytes
 *       a version 2 record under another timestamp, its checksum sealed again
 *       (an EncodedEvent appended: restamp_python).
 *   decode_forwarded(records) -> (events, others)
 *       a mesh link's usual records as EncodedEvents (decode_encoded_python);
 *       None and the index in ``others`` for any record it does not take.
 *   stored_events(events, first, timestamp) -> list | None
 *       the Events an append returns (records.stored_events' loop).
 *   decode_plain(records, offsets, kinds, tail) -> list | None
 *       the Events of a run of plain records being read (_decode_plain_python).
 *
 * and one of tidelog/mesh/wire.py's (tests/mesh/test_protocol.py checks the two):
 *
 *   link_batch(events, node_tag, hop_prefix) -> bytes | None
 *       a mesh link's batch of local Events (wire.encode_batch without renaming);
 *       None if an event is of another kind.
 *
 * and one of tidelog/mesh/tail.py's (tests/mesh/test_tail.py checks the two):
 *
 *   held_bytes(events, per_event) -> int | None
 *       what a live tail counts for holding a commit's Events (_held_total).
 *
 * The last three make attrs ``slots=True`` objects directly: allocated by their
 * type, each field stored at its member descriptor's offset (what the attrs
 * __init__ does, without a call per object). configure_records() is given the
 * types and field names once, by records.py at import, and checks each is a
 * plain object slot.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <limits.h>
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

/* ---- record hot paths (tidelog/storage/records.py has the same in Python) ---- */

/* restamp(record, timestamp) -> bytes
 *     a version 2 record with ``timestamp`` (u64) written into bytes 2-9 of its
 *     header and its checksum sealed again: one allocation, one CRC pass. */
static PyObject *
restamp(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    unsigned long long timestamp;
    Py_ssize_t size;
    PyObject *out;
    unsigned char *p;
    uint32_t crc;

    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "restamp(record, timestamp) takes 2 positional arguments");
        return NULL;
    }
    if (!PyBytes_Check(args[0])) {
        PyErr_Format(PyExc_TypeError, "restamp() record must be bytes, not %.100s", Py_TYPE(args[0])->tp_name);
        return NULL;
    }
    timestamp = PyLong_AsUnsignedLongLong(args[1]);
    if (timestamp == (unsigned long long)-1 && PyErr_Occurred()) {
        return NULL;
    }
    size = PyBytes_GET_SIZE(args[0]);
    if (size < 16) {
        PyErr_SetString(PyExc_ValueError, "restamp() needs a version 2 record (16 bytes or more)");
        return NULL;
    }
    out = PyBytes_FromStringAndSize(PyBytes_AS_STRING(args[0]), size);
    if (out == NULL) {
        return NULL;
    }
    p = (unsigned char *)PyBytes_AS_STRING(out);
    for (int k = 0; k < 8; k++) {
        p[2 + k] = (unsigned char)(timestamp >> (56 - 8 * k));
    }
    crc = crc_fn(0, p, (size_t)(size - 4));
    p += size - 4;
    p[0] = (unsigned char)crc;
    p[1] = (unsigned char)(crc >> 8);
    p[2] = (unsigned char)(crc >> 16);
    p[3] = (unsigned char)(crc >> 24);
    return out;
}

/* The version of the record functions' signatures and of what they read and make:
 * records.py uses them only when it expects this one (raise it on any change). */
#define RECORDS_API 3

/* What configure_records() was given: the types the functions below read and make,
 * and the offsets of their fields (attrs ``slots=True`` classes: each field a member
 * descriptor storing an object pointer at a fixed offset). */
#define NEW_FIELDS 6        /* NewEvent: topic payload qos retain properties provenance */
#define EVENT_FIELDS 7      /* EncodedEvent: those, then record */
#define STORED_FIELDS 8     /* Event: offset timestamp, then NewEvent's */
#define PROVENANCE_FIELDS 5 /* client_id packet_id origin_node origin_offset hop_path */
static PyTypeObject *new_type = NULL, *event_type = NULL, *stored_type = NULL, *provenance_type = NULL;
static Py_ssize_t event_slots[EVENT_FIELDS], stored_slots[STORED_FIELDS],
    provenance_slots[PROVENANCE_FIELDS];
static PyObject *topic_cache = NULL; /* dict: raw topic (bytes) -> str, shared with records.py */
static Py_ssize_t topic_cache_size = 0;

static int
slot_offsets(PyObject *type, PyObject *names, Py_ssize_t count, Py_ssize_t *offsets)
{
    if (!PyType_Check(type) || !PyTuple_Check(names) || PyTuple_GET_SIZE(names) != count) {
        PyErr_Format(PyExc_TypeError, "configure_records() takes types and tuples of %zd names", count);
        return -1;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *descr = PyObject_GetAttr(type, PyTuple_GET_ITEM(names, i));
        PyMemberDef *member;
        if (descr == NULL) {
            return -1;
        }
        if (!Py_IS_TYPE(descr, &PyMemberDescr_Type)) {
            PyErr_Format(PyExc_TypeError, "%R is not a slot of %R", PyTuple_GET_ITEM(names, i), type);
            Py_DECREF(descr);
            return -1;
        }
        member = ((PyMemberDescrObject *)descr)->d_member;
        if (!PyType_IsSubtype((PyTypeObject *)type, ((PyMemberDescrObject *)descr)->d_common.d_type) ||
            member->type != T_OBJECT_EX || (member->flags & READONLY) ||
            member->offset < (Py_ssize_t)sizeof(PyObject) ||
            member->offset + (Py_ssize_t)sizeof(PyObject *) > ((PyTypeObject *)type)->tp_basicsize) {
            PyErr_Format(PyExc_TypeError, "%R is not an object slot of %R", PyTuple_GET_ITEM(names, i), type);
            Py_DECREF(descr);
            return -1;
        }
        offsets[i] = member->offset;
        Py_DECREF(descr);
        for (Py_ssize_t j = 0; j < i; j++) {
            if (offsets[j] == offsets[i]) {
                PyErr_Format(PyExc_TypeError, "%R and %R are one slot of %R", PyTuple_GET_ITEM(names, j),
                             PyTuple_GET_ITEM(names, i), type);
                return -1;
            }
        }
    }
    return 0;
}

/* configure_records(new_event_type, encoded_event_type, encoded_fields, event_type,
 *                   event_fields, provenance_type, provenance_fields, topic_cache,
 *                   topic_cache_size) -> None
 * encoded_fields: NewEvent's six, then record; the encoded type must subclass the
 * new one and keep its slots where they are. */
static PyObject *
configure_records(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t encoded[EVENT_FIELDS], stored[STORED_FIELDS], provenance[PROVENANCE_FIELDS], size;
    if (nargs != 9) {
        PyErr_SetString(PyExc_TypeError, "configure_records() takes 9 positional arguments");
        return NULL;
    }
    if (slot_offsets(args[1], args[2], EVENT_FIELDS, encoded) < 0 ||
        slot_offsets(args[3], args[4], STORED_FIELDS, stored) < 0 ||
        slot_offsets(args[5], args[6], PROVENANCE_FIELDS, provenance) < 0) {
        return NULL;
    }
    if (PyType_Check(args[0]) && PyType_IsSubtype((PyTypeObject *)args[1], (PyTypeObject *)args[0])) {
        Py_ssize_t plain[NEW_FIELDS];
        PyObject *names = PyTuple_GetSlice(args[2], 0, NEW_FIELDS);
        int failed = names == NULL || slot_offsets(args[0], names, NEW_FIELDS, plain) < 0;
        Py_XDECREF(names);
        if (failed) {
            return NULL;
        }
        if (memcmp(plain, encoded, sizeof(plain)) == 0) {
            goto types_ok;
        }
    }
    PyErr_SetString(PyExc_TypeError, "configure_records(): the encoded type must extend the new "
                                     "one, its first six fields the new one's");
    return NULL;
types_ok:
    if (!PyDict_CheckExact(args[7])) {
        PyErr_SetString(PyExc_TypeError, "configure_records() topic cache must be a dict");
        return NULL;
    }
    size = PyLong_AsSsize_t(args[8]);
    if (size == -1 && PyErr_Occurred()) {
        return NULL;
    }
    memcpy(event_slots, encoded, sizeof(encoded));
    memcpy(stored_slots, stored, sizeof(stored));
    memcpy(provenance_slots, provenance, sizeof(provenance));
    topic_cache_size = size;
    Py_INCREF(args[0]);
    Py_XSETREF(new_type, (PyTypeObject *)args[0]);
    Py_INCREF(args[1]);
    Py_XSETREF(event_type, (PyTypeObject *)args[1]);
    Py_INCREF(args[3]);
    Py_XSETREF(stored_type, (PyTypeObject *)args[3]);
    Py_INCREF(args[5]);
    Py_XSETREF(provenance_type, (PyTypeObject *)args[5]);
    Py_INCREF(args[7]);
    Py_XSETREF(topic_cache, args[7]);
    Py_RETURN_NONE;
}

/* Store ``value`` (a new reference, stolen) in the empty slot at ``offset``. */
#define SET_SLOT(obj, offset, value) (*(PyObject **)((char *)(obj) + (offset)) = (value))

static inline unsigned
u16(const unsigned char *p)
{
    return (unsigned)p[0] << 8 | p[1];
}

/* A str from UTF-8, or NULL: with an exception set for anything but bad UTF-8
 * (which makes the record not one this fast path takes: *bad is set). */
static PyObject *
utf8(const unsigned char *p, Py_ssize_t n, int *bad)
{
    PyObject *text = PyUnicode_DecodeUTF8((const char *)p, n, "strict");
    if (text == NULL && PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
        PyErr_Clear();
        *bad = 1;
    }
    return text;
}

/* The topic of the raw bytes, through the shared cache (records.py's _topic_str). */
static PyObject *
cached_topic(const unsigned char *p, Py_ssize_t n, int *bad)
{
    PyObject *raw = PyBytes_FromStringAndSize((const char *)p, n), *topic;
    if (raw == NULL) {
        return NULL;
    }
    topic = PyDict_GetItemWithError(topic_cache, raw);
    if (topic != NULL) {
        Py_INCREF(topic);
    }
    else if (!PyErr_Occurred()) {
        topic = utf8(p, n, bad);
        if (topic != NULL && PyDict_GET_SIZE(topic_cache) < topic_cache_size &&
            PyDict_SetItem(topic_cache, raw, topic) < 0) {
            Py_CLEAR(topic);
        }
    }
    Py_DECREF(raw);
    return topic;
}

/* A str for p[0:n], the same object as *last when its bytes (*last_p, *last_n) are
 * equal: a batch repeats a few topics and one origin. Returns a new reference. */
static PyObject *
memo_text(const unsigned char *p, Py_ssize_t n, const unsigned char **last_p, Py_ssize_t *last_n,
          PyObject **last, int topic, int *bad)
{
    PyObject *text;
    if (*last != NULL && *last_n == n && memcmp(*last_p, p, (size_t)n) == 0) {
        Py_INCREF(*last);
        return *last;
    }
    text = topic ? cached_topic(p, n, bad) : utf8(p, n, bad);
    if (text != NULL) {
        Py_INCREF(text);
        Py_XSETREF(*last, text);
        *last_p = p;
        *last_n = n;
    }
    return text;
}

/* One record as an EncodedEvent, or NULL: with an exception set on a failure of
 * Python's (memory), without one when the record is not a usual forwarded record
 * (records.py's decode_encoded then takes it). */
struct memo {
    const unsigned char *topic_p, *origin_p;
    Py_ssize_t topic_n, origin_n;
    PyObject *topic, *origin;
};

/* Where a decoded record's provenance is in its bytes (forwarded_event fills it in when
 * given one): the origin node, the origin offset and each hop. */
#define MAX_HOPS 64
struct path {
    const unsigned char *origin_p, *hop_p[MAX_HOPS];
    Py_ssize_t origin_n, hop_n[MAX_HOPS];
    unsigned long long origin_offset;
    int hops;
};

static PyObject *
forwarded_event(PyObject *record, struct memo *memo, struct path *path)
{
    const unsigned char *data = (const unsigned char *)PyBytes_AS_STRING(record), *hop_p[MAX_HOPS];
    Py_ssize_t size = PyBytes_GET_SIZE(record), pos, stop, end, n, hop_n[MAX_HOPS];
    unsigned flags;
    unsigned long long origin_offset = 0;
    int hops = 0, bad = 0;
    PyObject *event = NULL, *provenance = NULL, *value, *hop_path;

    if (size < 16 || data[0] != 2) {
        return NULL;
    }
    flags = data[1];
    stop = size - 4;
    pos = 12 + (Py_ssize_t)u16(data + 10);
    if ((flags & 0x18) != 0x10 || pos + 2 > stop || crc_fn(0, data, (size_t)size) != 0) {
        return NULL;
    }
    end = pos + 2 + (Py_ssize_t)u16(data + pos);
    if (end > stop) {
        return NULL;
    }
    pos += 2;
    /* origin node, origin offset, then one hop or more, nothing else */
    if (pos + 3 > end || data[pos] != 0x03) {
        return NULL;
    }
    n = (Py_ssize_t)u16(data + pos + 1);
    pos += 3 + n;
    if (pos + 9 > end || data[pos] != 0x04) {
        return NULL;
    }
    for (int k = 1; k <= 8; k++) {
        origin_offset = origin_offset << 8 | data[pos + k];
    }
    pos += 9;
    while (pos < end) {
        if (hops == MAX_HOPS || pos + 3 > end || data[pos] != 0x05) {
            return NULL;
        }
        hop_n[hops] = (Py_ssize_t)u16(data + pos + 1);
        hop_p[hops] = data + pos + 3;
        pos += 3 + hop_n[hops];
        if (pos > end) {
            return NULL;
        }
        hops++;
    }
    if (hops == 0) {
        return NULL;
    }

    provenance = provenance_type->tp_alloc(provenance_type, 0);
    if (provenance == NULL) {
        return NULL;
    }
    Py_INCREF(Py_None);
    SET_SLOT(provenance, provenance_slots[0], Py_None);
    Py_INCREF(Py_None);
    SET_SLOT(provenance, provenance_slots[1], Py_None);
    pos = 12 + (Py_ssize_t)u16(data + 10) + 2;
    value = memo_text(data + pos + 3, (Py_ssize_t)u16(data + pos + 1), &memo->origin_p,
                      &memo->origin_n, &memo->origin, 0, &bad);
    if (value == NULL) {
        goto fail;
    }
    SET_SLOT(provenance, provenance_slots[2], value);
    value = PyLong_FromUnsignedLongLong(origin_offset);
    if (value == NULL) {
        goto fail;
    }
    SET_SLOT(provenance, provenance_slots[3], value);
    hop_path = PyTuple_New(hops);
    if (hop_path == NULL) {
        goto fail;
    }
    SET_SLOT(provenance, provenance_slots[4], hop_path);
    for (int k = 0; k < hops; k++) {
        value = utf8(hop_p[k], hop_n[k], &bad);
        if (value == NULL) {
            goto fail;
        }
        PyTuple_SET_ITEM(hop_path, k, value);
    }

    event = event_type->tp_alloc(event_type, 0);
    if (event == NULL) {
        goto fail;
    }
    value = memo_text(data + 12, (Py_ssize_t)u16(data + 10), &memo->topic_p, &memo->topic_n,
                      &memo->topic, 1, &bad);
    if (value == NULL) {
        goto fail;
    }
    SET_SLOT(event, event_slots[0], value);
    value = PyBytes_FromStringAndSize((const char *)data + end, stop - end);
    if (value == NULL) {
        goto fail;
    }
    SET_SLOT(event, event_slots[1], value);
    SET_SLOT(event, event_slots[2], PyLong_FromLong((long)(flags & 0x03))); /* small ints: cached */
    value = (flags & 0x04) ? Py_True : Py_False;
    Py_INCREF(value);
    SET_SLOT(event, event_slots[3], value);
    Py_INCREF(Py_None);
    SET_SLOT(event, event_slots[4], Py_None);
    SET_SLOT(event, event_slots[5], provenance);
    Py_INCREF(record);
    SET_SLOT(event, event_slots[6], record);
    if (path != NULL) {
        pos = 12 + (Py_ssize_t)u16(data + 10) + 2;
        path->origin_p = data + pos + 3;
        path->origin_n = (Py_ssize_t)u16(data + pos + 1);
        path->origin_offset = origin_offset;
        path->hops = hops;
        memcpy(path->hop_p, hop_p, sizeof(hop_p[0]) * (size_t)hops);
        memcpy(path->hop_n, hop_n, sizeof(hop_n[0]) * (size_t)hops);
    }
    return event;

fail:
    Py_XDECREF(event);
    Py_DECREF(provenance);
    return NULL; /* bad UTF-8: no exception, the record goes the other way */
}

/* decode_forwarded(records) -> (events, others)
 *     each record (bytes) that is a usual forwarded record (version 2, checksum
 *     good, provenance of origin node, origin offset and hops, no properties) as
 *     an EncodedEvent; None in its place for any other record, whose index is
 *     listed in ``others`` (records.py decodes those, and names a bad one). */
static PyObject *
decode_forwarded(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *records, *events, *others, *event, *result = NULL;
    Py_ssize_t count;
    struct memo memo = {NULL, NULL, 0, 0, NULL, NULL};

    if (nargs != 1 || !PyList_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "decode_forwarded(records) takes a list of bytes");
        return NULL;
    }
    if (event_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "configure_records() was not called");
        return NULL;
    }
    /* a copy: the records stay alive (the memo points into them) whatever code a
     * garbage collection run by an allocation below may run */
    records = PyList_GetSlice(args[0], 0, PY_SSIZE_T_MAX);
    if (records == NULL) {
        return NULL;
    }
    count = PyList_GET_SIZE(records);
    events = PyList_New(count);
    others = PyList_New(0);
    if (events == NULL || others == NULL) {
        goto done;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *record = PyList_GET_ITEM(records, i);
        event = PyBytes_CheckExact(record) ? forwarded_event(record, &memo, NULL) : NULL;
        if (event == NULL) {
            PyObject *index;
            if (PyErr_Occurred()) {
                goto done;
            }
            index = PyLong_FromSsize_t(i);
            if (index == NULL || PyList_Append(others, index) < 0) {
                Py_XDECREF(index);
                goto done;
            }
            Py_DECREF(index);
            Py_INCREF(Py_None);
            event = Py_None;
        }
        PyList_SET_ITEM(events, i, event);
    }
    result = PyTuple_Pack(2, events, others);
done:
    Py_DECREF(records);
    Py_XDECREF(events);
    Py_XDECREF(others);
    Py_XDECREF(memo.topic);
    Py_XDECREF(memo.origin);
    return result;
}

#define GET_SLOT(obj, offset) (*(PyObject **)((char *)(obj) + (offset)))

/* stored_events(events, first, timestamp) -> list | None
 *     records.py's stored_events: an Event per NewEvent (or EncodedEvent) of
 *     ``events`` (a list), at offsets from ``first``, all with ``timestamp``; None
 *     when an item is of another type or lacks a field (records.py then makes them). */
static PyObject *
stored_events(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *events, *out;
    long long first;
    Py_ssize_t count;

    if (nargs != 3 || !PyList_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "stored_events(events, first, timestamp) takes a list");
        return NULL;
    }
    if (stored_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "configure_records() was not called");
        return NULL;
    }
    first = PyLong_AsLongLong(args[1]);
    if (first == -1 && PyErr_Occurred()) {
        if (!PyErr_ExceptionMatches(PyExc_OverflowError)) {
            return NULL;
        }
        PyErr_Clear();
        Py_RETURN_NONE; /* past a long long: Python's ints make them */
    }
    events = PyList_GetSlice(args[0], 0, PY_SSIZE_T_MAX); /* a copy: see decode_forwarded */
    if (events == NULL) {
        return NULL;
    }
    count = PyList_GET_SIZE(events);
    if (first > LLONG_MAX - count) {
        Py_DECREF(events);
        Py_RETURN_NONE; /* the last offsets past a long long: as above */
    }
    out = PyList_New(count);
    if (out == NULL) {
        Py_DECREF(events);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *item = PyList_GET_ITEM(events, i), *event, *offset;
        offset = PyLong_FromLongLong(first + i);
        if (offset == NULL) {
            Py_CLEAR(out);
            break;
        }
        event = stored_type->tp_alloc(stored_type, 0);
        if (event == NULL) {
            Py_DECREF(offset);
            Py_CLEAR(out);
            break;
        }
        PyList_SET_ITEM(out, i, event);
        SET_SLOT(event, stored_slots[0], offset);
        Py_INCREF(args[2]);
        SET_SLOT(event, stored_slots[1], args[2]);
        /* the item's type and fields read after the allocation: it can run the GC,
         * whose finalizers can run any code (delete a field, change a __class__) */
        if (!Py_IS_TYPE(item, new_type) && !Py_IS_TYPE(item, event_type)) {
            goto other;
        }
        for (int k = 0; k < NEW_FIELDS; k++) {
            PyObject *value = GET_SLOT(item, event_slots[k]);
            if (value == NULL) {
                goto other;
            }
            Py_INCREF(value);
            SET_SLOT(event, stored_slots[2 + k], value);
        }
    }
    Py_DECREF(events);
    return out;
other: /* an item of another type, or one lacking a field: records.py makes them */
    Py_DECREF(events);
    Py_DECREF(out);
    Py_RETURN_NONE;
}

/* decode_plain(records, offsets, kinds, tail) -> list | None
 *     records.py's _decode_plain: the Events of a run of plain records (no
 *     properties, no provenance) of one version, ``kinds`` being
 *     (version << 8 | flags) >> 3 of such a record and ``tail`` the checksum's size
 *     (4, version 2, checked already) or 0 (version 1); None if a record is not
 *     one of them, is cut short or its topic is not UTF-8 (decode_run then decodes
 *     the run record by record, which names a bad one). */
static PyObject *
decode_plain(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *records, *offsets, *out = NULL, *stamp = NULL;
    long kinds, tail;
    Py_ssize_t count;
    const unsigned char *last_stamp = NULL;
    struct memo memo = {NULL, NULL, 0, 0, NULL, NULL};
    int bad = 0;

    if (nargs != 4 || !PyList_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "decode_plain(records, offsets, kinds, tail) takes a list");
        return NULL;
    }
    if (stored_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "configure_records() was not called");
        return NULL;
    }
    kinds = PyLong_AsLong(args[2]);
    if (kinds == -1 && PyErr_Occurred()) {
        return NULL;
    }
    tail = PyLong_AsLong(args[3]);
    if (tail == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (tail < 0) {
        PyErr_SetString(PyExc_ValueError, "decode_plain() tail must not be negative");
        return NULL;
    }
    records = PyList_GetSlice(args[0], 0, PY_SSIZE_T_MAX); /* a copy: see decode_forwarded */
    if (records == NULL) {
        return NULL;
    }
    count = PyList_GET_SIZE(records);
    offsets = PySequence_GetSlice(args[1], 0, count); /* a copy of the ones used, as above */
    if (offsets != NULL && !PyList_CheckExact(offsets)) {
        Py_SETREF(offsets, PySequence_List(offsets));
    }
    if (offsets == NULL) {
        Py_DECREF(records);
        return NULL;
    }
    if (PyList_GET_SIZE(offsets) < count) {
        PyErr_SetString(PyExc_ValueError, "decode_plain() needs an offset per record");
        goto fail;
    }
    out = PyList_New(count);
    if (out == NULL) {
        goto fail;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *record = PyList_GET_ITEM(records, i), *event, *value;
        const unsigned char *data;
        Py_ssize_t size, end;
        unsigned flags;
        if (!PyBytes_CheckExact(record)) {
            goto other;
        }
        data = (const unsigned char *)PyBytes_AS_STRING(record);
        size = PyBytes_GET_SIZE(record);
        if (size < 12) {
            goto other;
        }
        flags = data[1];
        end = 12 + (Py_ssize_t)u16(data + 10);
        if ((long)(((unsigned)data[0] << 8 | flags) >> 3) != kinds || size < end + tail) {
            goto other;
        }
        event = stored_type->tp_alloc(stored_type, 0);
        if (event == NULL) {
            goto fail;
        }
        PyList_SET_ITEM(out, i, event);
        value = PyList_GET_ITEM(offsets, i);
        Py_INCREF(value);
        SET_SLOT(event, stored_slots[0], value);
        if (stamp == NULL || memcmp(last_stamp, data + 2, 8) != 0) {
            unsigned long long timestamp = 0;
            for (int k = 2; k < 10; k++) {
                timestamp = timestamp << 8 | data[k];
            }
            Py_XSETREF(stamp, PyLong_FromUnsignedLongLong(timestamp));
            if (stamp == NULL) {
                goto fail;
            }
            last_stamp = data + 2;
        }
        Py_INCREF(stamp);
        SET_SLOT(event, stored_slots[1], stamp);
        value = memo_text(data + 12, end - 12, &memo.topic_p, &memo.topic_n, &memo.topic, 1, &bad);
        if (value == NULL) {
            if (PyErr_Occurred()) {
                goto fail;
            }
            goto other;
        }
        SET_SLOT(event, stored_slots[2], value);
        value = PyBytes_FromStringAndSize((const char *)data + end, size - tail - end);
        if (value == NULL) {
            goto fail;
        }
        SET_SLOT(event, stored_slots[3], value);
        SET_SLOT(event, stored_slots[4], PyLong_FromLong((long)(flags & 0x03)));
        value = (flags & 0x04) ? Py_True : Py_False;
        Py_INCREF(value);
        SET_SLOT(event, stored_slots[5], value);
        Py_INCREF(Py_None);
        SET_SLOT(event, stored_slots[6], Py_None);
        Py_INCREF(Py_None);
        SET_SLOT(event, stored_slots[7], Py_None);
    }
    goto done;
other:
    Py_CLEAR(out);
    out = Py_None;
    Py_INCREF(out);
    goto done;
fail:
    Py_CLEAR(out);
done:
    Py_DECREF(offsets);
    Py_DECREF(records);
    Py_XDECREF(stamp);
    Py_XDECREF(memo.topic);
    return out;
}

/* A local event's fields, as link_batch writes them; 0 if the event is not a usual
 * local one (a Python error may be set, for a failure of Python's). */
struct local_event {
    unsigned long long offset, timestamp;
    const char *topic, *payload;
    Py_ssize_t topic_n, payload_n;
    int flags, digits_n;
    char digits[24];
};

static int
local_event(PyObject *item, struct local_event *e)
{
    PyObject *value, *provenance;
    if (!Py_IS_TYPE(item, stored_type)) {
        return 0;
    }
    for (int k = 0; k < STORED_FIELDS; k++) {
        if (GET_SLOT(item, stored_slots[k]) == NULL) {
            return 0;
        }
    }
    if (GET_SLOT(item, stored_slots[6]) != Py_None) {
        return 0; /* properties */
    }
    provenance = GET_SLOT(item, stored_slots[7]);
    if (provenance != Py_None &&
        (!Py_IS_TYPE(provenance, provenance_type) || GET_SLOT(provenance, provenance_slots[2]) != Py_None)) {
        return 0; /* forwarded (or not a Provenance): Python writes its hop path */
    }
    /* not an int, negative or past a u64: Python's struct raises (each checked before
     * the next call: the C API is not called with an exception set) */
    e->offset = PyLong_AsUnsignedLongLong(GET_SLOT(item, stored_slots[0]));
    if (e->offset == (unsigned long long)-1 && PyErr_Occurred()) {
        PyErr_Clear();
        return 0;
    }
    e->timestamp = PyLong_AsUnsignedLongLong(GET_SLOT(item, stored_slots[1]));
    if (e->timestamp == (unsigned long long)-1 && PyErr_Occurred()) {
        PyErr_Clear();
        return 0;
    }
    value = GET_SLOT(item, stored_slots[2]);
    if (!PyUnicode_CheckExact(value)) {
        return 0;
    }
    e->topic = PyUnicode_AsUTF8AndSize(value, &e->topic_n);
    if (e->topic == NULL) {
        PyErr_Clear(); /* surrogates: Python's encode raises for them */
        return 0;
    }
    value = GET_SLOT(item, stored_slots[3]);
    if (!PyBytes_CheckExact(value) || e->topic_n > 0xFFFF) {
        return 0;
    }
    e->payload = PyBytes_AS_STRING(value);
    e->payload_n = PyBytes_GET_SIZE(value);
    value = GET_SLOT(item, stored_slots[4]);
    if (!PyLong_CheckExact(value)) {
        return 0;
    }
    e->flags = (int)(PyLong_AsLong(value) & 0x03) | 0x10;
    if (PyErr_Occurred()) {
        PyErr_Clear(); /* past a long: Python's & takes it */
        return 0;
    }
    value = GET_SLOT(item, stored_slots[5]);
    if (value == Py_True) {
        e->flags |= 0x04;
    }
    else if (value != Py_False) {
        return 0;
    }
    e->digits_n = snprintf(e->digits, sizeof(e->digits), "%llu", e->offset);
    return 1;
}

static inline unsigned char *
put_u16(unsigned char *p, size_t v)
{
    p[0] = (unsigned char)(v >> 8);
    p[1] = (unsigned char)v;
    return p + 2;
}

static inline unsigned char *
put_u64(unsigned char *p, unsigned long long v)
{
    for (int i = 7; i >= 0; i--) {
        *p++ = (unsigned char)(v >> (8 * i));
    }
    return p;
}

/* link_batch(events, node_tag, hop_prefix) -> bytes | None
 *     wire.py's encode_batch for a batch of local events (no properties, no origin
 *     node in their provenance), no renaming: ``u32 length, record`` per event, each
 *     record version 2 with the provenance origin node (``node_tag``: its tag, length
 *     and name), origin offset and one hop (``hop_prefix``: "node/incarnation/", then
 *     the offset's digits). None if an event is another kind (wire.py encodes the
 *     batch in Python). */
static PyObject *
link_batch(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *events, *out = NULL;
    const char *node_tag, *hop;
    Py_ssize_t count, node_n, hop_n, total = 0;
    struct local_event *fields = NULL;
    unsigned char *p;

    if (nargs != 3 || !PyList_Check(args[0]) || !PyBytes_CheckExact(args[1]) || !PyBytes_CheckExact(args[2])) {
        PyErr_SetString(PyExc_TypeError, "link_batch(events, node_tag, hop_prefix) takes a list and bytes");
        return NULL;
    }
    if (stored_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "configure_records() was not called");
        return NULL;
    }
    node_tag = PyBytes_AS_STRING(args[1]);
    node_n = PyBytes_GET_SIZE(args[1]);
    hop = PyBytes_AS_STRING(args[2]);
    hop_n = PyBytes_GET_SIZE(args[2]);
    if (node_n + 12 + hop_n + 20 > 0xFFFF) {
        Py_RETURN_NONE; /* a provenance block past a u16: Python's struct raises */
    }
    events = PyList_GetSlice(args[0], 0, PY_SSIZE_T_MAX); /* a copy: see decode_forwarded */
    if (events == NULL) {
        return NULL;
    }
    count = PyList_GET_SIZE(events);
    fields = PyMem_New(struct local_event, (size_t)(count > 0 ? count : 1));
    if (fields == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    /* two passes: the fields and sizes (and whether this path takes them all), then
     * the bytes from the fields kept (read once: the second pass calls no Python API).
     * The topic and payload pointers stay valid in between: the copied list holds the
     * events, the events their slots, and nothing between the passes runs Python code
     * (a bytes object is not tracked by the GC) */
    for (Py_ssize_t i = 0; i < count; i++) {
        struct local_event *e = &fields[i];
        if (!local_event(PyList_GET_ITEM(events, i), e)) {
            goto other;
        }
        /* length, header (1 + 1 + 8 + 2), topic, block length, block, payload, CRC */
        total += 4 + 12 + e->topic_n + 2 + node_n + 9 + 3 + hop_n + e->digits_n + e->payload_n + 4;
    }
    out = PyBytes_FromStringAndSize(NULL, total);
    if (out == NULL) {
        goto done;
    }
    p = (unsigned char *)PyBytes_AS_STRING(out);
    for (Py_ssize_t i = 0; i < count; i++) {
        const struct local_event *e = &fields[i];
        unsigned char *record;
        uint32_t crc;
        Py_ssize_t size;
        size = 12 + e->topic_n + 2 + node_n + 9 + 3 + hop_n + e->digits_n + e->payload_n + 4;
        p[0] = (unsigned char)(size >> 24);
        p[1] = (unsigned char)(size >> 16);
        p[2] = (unsigned char)(size >> 8);
        p[3] = (unsigned char)size;
        record = p += 4;
        *p++ = 2; /* FORMAT_VERSION */
        *p++ = (unsigned char)e->flags;
        p = put_u64(p, e->timestamp);
        p = put_u16(p, (size_t)e->topic_n);
        memcpy(p, e->topic, (size_t)e->topic_n);
        p += e->topic_n;
        p = put_u16(p, (size_t)(node_n + 9 + 3 + hop_n + e->digits_n));
        memcpy(p, node_tag, (size_t)node_n);
        p += node_n;
        *p++ = 0x04; /* origin offset */
        p = put_u64(p, e->offset);
        *p++ = 0x05; /* hop */
        p = put_u16(p, (size_t)(hop_n + e->digits_n));
        memcpy(p, hop, (size_t)hop_n);
        p += hop_n;
        memcpy(p, e->digits, (size_t)e->digits_n);
        p += e->digits_n;
        memcpy(p, e->payload, (size_t)e->payload_n);
        p += e->payload_n;
        crc = crc_fn(0, record, (size_t)(p - record));
        p[0] = (unsigned char)crc;
        p[1] = (unsigned char)(crc >> 8);
        p[2] = (unsigned char)(crc >> 16);
        p[3] = (unsigned char)(crc >> 24);
        p += 4;
    }
done:
    PyMem_Free(fields);
    Py_DECREF(events);
    return out;
other:
    PyMem_Free(fields);
    Py_DECREF(events);
    if (PyErr_Occurred()) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* held_bytes(events, per_event) -> int | None
 *     tidelog/mesh/tail.py's _held_total: the payload bytes and topic lengths of a list
 *     of stored Events (bytes payloads, str topics) plus per_event for each, in one pass
 *     and no Python call per event; None if an item is something else (tail.py counts
 *     it in Python). */
static PyObject *
held_bytes(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t count, per_event, total = 0;
    if (nargs != 2 || !PyList_Check(args[0]) || !PyLong_CheckExact(args[1])) {
        PyErr_SetString(PyExc_TypeError, "held_bytes(events, per_event) takes a list and an int");
        return NULL;
    }
    if (stored_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "configure_records() was not called");
        return NULL;
    }
    per_event = PyLong_AsSsize_t(args[1]);
    if (per_event == -1 && PyErr_Occurred()) {
        return NULL;
    }
    count = PyList_GET_SIZE(args[0]);
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *item = PyList_GET_ITEM(args[0], i), *topic, *payload;
        if (!Py_IS_TYPE(item, stored_type)) {
            Py_RETURN_NONE;
        }
        topic = GET_SLOT(item, stored_slots[2]);
        payload = GET_SLOT(item, stored_slots[3]);
        if (topic == NULL || payload == NULL || !PyUnicode_CheckExact(topic) || !PyBytes_CheckExact(payload)) {
            Py_RETURN_NONE;
        }
        total += PyBytes_GET_SIZE(payload) + PyUnicode_GET_LENGTH(topic) + per_event;
    }
    return PyLong_FromSsize_t(total);
}

/* ---- a link receiver's batch (tidelog/mesh/wire.py's decode_shaped) and its append
 * (records.py's encode_records) ---- */

/* The length of "node/incarnation/" of a hop ``node/incarnation/offset`` (the offset
 * 1 to 20 ASCII digits: wire.py's Hop.parse and _is_offset), or -1 for another text. */
static Py_ssize_t
hop_prefix(const unsigned char *p, Py_ssize_t n)
{
    const unsigned char *first = memchr(p, '/', (size_t)n), *second;
    Py_ssize_t prefix;
    if (first == NULL) {
        return -1;
    }
    second = memchr(first + 1, '/', (size_t)(n - (first + 1 - p)));
    if (second == NULL) {
        return -1;
    }
    prefix = second + 1 - p;
    if (n - prefix < 1 || n - prefix > 20) {
        return -1;
    }
    for (Py_ssize_t i = prefix; i < n; i++) {
        if (p[i] < '0' || p[i] > '9') {
            return -1;
        }
    }
    return prefix;
}

/* decode_link(payload, sender) -> (events, shape) | None
 *     wire.py's decode_shaped for the usual batch: the ``u32 length, record`` framing,
 *     each record a usual forwarded one (decode_forwarded's), every hop
 *     ``node/incarnation/offset``, the first one's node the event's origin, the last
 *     one's node ``sender`` (UTF-8 bytes; None: any); ``shape`` is (origin,
 *     incarnation, first, last) when every event has the first's origin and path (the
 *     same "node/incarnation/" hop by hop) and their origin offsets rise, else None.
 *     None for anything else (a record of another kind, a bad hop or frame, a first
 *     hop not the origin's: wire.py takes the batch, and names what is wrong). */
static PyObject *
decode_link(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *events, *held, *event, *result = NULL;
    const unsigned char *data, *sender = NULL;
    Py_ssize_t size, sender_n = 0, pos = 0, count = 0, prefix[MAX_HOPS];
    struct memo memo = {NULL, NULL, 0, 0, NULL, NULL};
    struct path path, first = {0};
    int shaped = 1;
    unsigned long long last = 0;

    if (nargs != 2 || !PyBytes_CheckExact(args[0]) || (args[1] != Py_None && !PyBytes_CheckExact(args[1]))) {
        PyErr_SetString(PyExc_TypeError, "decode_link(payload, sender) takes bytes and bytes or None");
        return NULL;
    }
    if (event_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "configure_records() was not called");
        return NULL;
    }
    data = (const unsigned char *)PyBytes_AS_STRING(args[0]);
    size = PyBytes_GET_SIZE(args[0]);
    if (args[1] != Py_None) {
        sender = (const unsigned char *)PyBytes_AS_STRING(args[1]);
        sender_n = PyBytes_GET_SIZE(args[1]);
    }
    events = PyList_New(0);
    held = PyList_New(0);
    if (events == NULL || held == NULL) {
        Py_XDECREF(events);
        Py_XDECREF(held);
        return NULL;
    }
    /* the records the memo and the paths point into, owned here: an untracked list,
     * which no garbage collector finalizer can reach (gc.get_objects) and empty */
    PyObject_GC_UnTrack(held);
    while (pos < size) {
        PyObject *record;
        Py_ssize_t length;
        size_t framed;
        int same;
        if (size - pos < 4) {
            goto other;
        }
        framed = (size_t)data[pos] << 24 | (size_t)data[pos + 1] << 16 |
                 (size_t)data[pos + 2] << 8 | data[pos + 3];
        pos += 4;
        if (framed > (size_t)(size - pos)) { /* compared unsigned: a 32-bit Py_ssize_t too */
            goto other;
        }
        length = (Py_ssize_t)framed;
        record = PyBytes_FromStringAndSize((const char *)data + pos, length);
        if (record == NULL) {
            goto done;
        }
        pos += length;
        if (PyList_Append(held, record) < 0) {
            Py_DECREF(record);
            goto done;
        }
        Py_DECREF(record);
        event = forwarded_event(record, &memo, &path);
        if (event == NULL) {
            if (PyErr_Occurred()) {
                goto done;
            }
            goto other;
        }
        if (PyList_Append(events, event) < 0) {
            Py_DECREF(event);
            goto done;
        }
        Py_DECREF(event);
        same = shaped && count > 0 && path.hops == first.hops && path.origin_n == first.origin_n &&
               memcmp(path.origin_p, first.origin_p, (size_t)path.origin_n) == 0 &&
               path.origin_offset > last;
        for (int k = 0; k < path.hops; k++) {
            Py_ssize_t n = hop_prefix(path.hop_p[k], path.hop_n[k]);
            if (n < 0) {
                goto other;
            }
            if (count == 0) {
                prefix[k] = n;
            }
            else if (same && (n != prefix[k] || memcmp(path.hop_p[k], first.hop_p[k], (size_t)n) != 0)) {
                same = 0;
            }
        }
        if (count == 0 || !same) {
            /* the first hop's node is the origin (implied for one as the first event) */
            const unsigned char *hop = path.hop_p[0];
            const unsigned char *slash = memchr(hop, '/', (size_t)path.hop_n[0]);
            if (slash - hop != path.origin_n ||
                memcmp(hop, path.origin_p, (size_t)path.origin_n) != 0) {
                goto other;
            }
        }
        if (sender != NULL) {
            const unsigned char *hop = path.hop_p[path.hops - 1];
            const unsigned char *slash = memchr(hop, '/', (size_t)path.hop_n[path.hops - 1]);
            if (slash - hop != sender_n || memcmp(hop, sender, (size_t)sender_n) != 0) {
                goto other;
            }
        }
        if (count == 0) {
            first = path;
        }
        else if (!same) {
            shaped = 0;
        }
        last = path.origin_offset;
        count++;
    }
    if (count == 0 || !shaped) {
        result = PyTuple_Pack(2, events, Py_None);
    }
    else {
        /* from the bytes (valid UTF-8: forwarded_event decoded them), not the objects */
        const unsigned char *slash = memchr(first.hop_p[0], '/', (size_t)first.hop_n[0]);
        PyObject *origin = PyUnicode_DecodeUTF8((const char *)first.origin_p, first.origin_n, "strict");
        PyObject *incarnation =
            PyUnicode_DecodeUTF8((const char *)slash + 1, prefix[0] - (slash + 1 - first.hop_p[0]) - 1, "strict");
        PyObject *low = PyLong_FromUnsignedLongLong(first.origin_offset);
        PyObject *high = PyLong_FromUnsignedLongLong(last);
        if (origin != NULL && incarnation != NULL && low != NULL && high != NULL) {
            result = Py_BuildValue("(O(OOOO))", events, origin, incarnation, low, high);
        }
        Py_XDECREF(origin);
        Py_XDECREF(incarnation);
        Py_XDECREF(low);
        Py_XDECREF(high);
    }
done:
    Py_DECREF(events);
    Py_DECREF(held);
    Py_XDECREF(memo.topic);
    Py_XDECREF(memo.origin);
    return result;
other:
    Py_DECREF(events);
    Py_DECREF(held);
    Py_XDECREF(memo.topic);
    Py_XDECREF(memo.origin);
    Py_RETURN_NONE;
}

/* restamp_all(events, timestamp, checked_topics) -> list | None
 *     records.py's encode_records for a batch (a list) of EncodedEvents only, each
 *     with an int QoS 0-2 and its topic (a str) in ``checked_topics``: each one's
 *     record restamped (restamp's bytes). None for any other batch (records.py
 *     encodes it, checking what it must). */
static PyObject *
restamp_all(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *events, *out;
    unsigned long long timestamp;
    Py_ssize_t count;

    if (nargs != 3 || !PyList_Check(args[0]) || !PyDict_CheckExact(args[2])) {
        PyErr_SetString(PyExc_TypeError, "restamp_all(events, timestamp, checked_topics) takes a list, an int and a dict");
        return NULL;
    }
    if (event_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "configure_records() was not called");
        return NULL;
    }
    timestamp = PyLong_AsUnsignedLongLong(args[1]);
    if (timestamp == (unsigned long long)-1 && PyErr_Occurred()) {
        PyErr_Clear(); /* not a u64: records.py raises as it does */
        Py_RETURN_NONE;
    }
    events = PyList_GetSlice(args[0], 0, PY_SSIZE_T_MAX); /* a copy: see decode_forwarded */
    if (events == NULL) {
        return NULL;
    }
    count = PyList_GET_SIZE(events);
    out = PyList_New(count);
    if (out == NULL) {
        Py_DECREF(events);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *item = PyList_GET_ITEM(events, i), *topic, *qos, *record, *stamped;
        Py_ssize_t size;
        unsigned char *p;
        uint32_t crc;
        long level;
        int known;
        if (!Py_IS_TYPE(item, event_type)) {
            goto other;
        }
        topic = GET_SLOT(item, event_slots[0]);
        qos = GET_SLOT(item, event_slots[2]);
        if (topic == NULL || qos == NULL || !PyUnicode_CheckExact(topic) ||
            !PyLong_CheckExact(qos)) {
            goto other;
        }
        level = PyLong_AsLong(qos);
        if (level < 0 || level > 2) {
            PyErr_Clear(); /* past a long: records.py checks it */
            goto other;
        }
        /* a key of checked_topics with the same hash and its own __eq__ could run code
         * that replaces the event's fields: the topic is held across the lookup, and
         * the record slot read after it */
        Py_INCREF(topic);
        known = PyDict_Contains(args[2], topic);
        Py_DECREF(topic);
        if (known < 0) {
            Py_DECREF(events);
            Py_DECREF(out);
            return NULL;
        }
        if (!known) {
            goto other;
        }
        record = GET_SLOT(item, event_slots[6]);
        if (record == NULL || !PyBytes_CheckExact(record) || PyBytes_GET_SIZE(record) < 16) {
            goto other;
        }
        Py_INCREF(record); /* the allocation may run the GC, whose finalizers may run code */
        size = PyBytes_GET_SIZE(record);
        stamped = PyBytes_FromStringAndSize(PyBytes_AS_STRING(record), size);
        Py_DECREF(record);
        if (stamped == NULL) {
            Py_DECREF(events);
            Py_DECREF(out);
            return NULL;
        }
        p = (unsigned char *)PyBytes_AS_STRING(stamped);
        put_u64(p + 2, timestamp);
        crc = crc_fn(0, p, (size_t)(size - 4));
        p += size - 4;
        p[0] = (unsigned char)crc;
        p[1] = (unsigned char)(crc >> 8);
        p[2] = (unsigned char)(crc >> 16);
        p[3] = (unsigned char)(crc >> 24);
        PyList_SET_ITEM(out, i, stamped);
    }
    Py_DECREF(events);
    return out;
other:
    Py_DECREF(events);
    Py_DECREF(out);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"crc32c", (PyCFunction)(void (*)(void))crc32c, METH_FASTCALL,
     "crc32c(state, data) -> int: the raw CRC-32C of data continuing from state (0 to start)."},
    {"seal", (PyCFunction)(void (*)(void))seal, METH_FASTCALL,
     "seal(head, state, payload) -> bytes: head + payload + their raw CRC-32C, 4 bytes "
     "little-endian; state is crc32c(0, head)."},
    {"restamp", (PyCFunction)(void (*)(void))restamp, METH_FASTCALL,
     "restamp(record, timestamp) -> bytes: a version 2 record under another timestamp, "
     "its checksum sealed again."},
    {"configure_records", (PyCFunction)(void (*)(void))configure_records, METH_FASTCALL,
     "configure_records(new_event_type, encoded_event_type, encoded_fields, event_type, "
     "event_fields, provenance_type, provenance_fields, topic_cache, topic_cache_size): "
     "the types the record functions read and make (records.py calls it)."},
    {"decode_plain", (PyCFunction)(void (*)(void))decode_plain, METH_FASTCALL,
     "decode_plain(records, offsets, kinds, tail) -> list | None: the Events of a run of "
     "plain records of one version (None: not all plain, records.py decodes them)."},
    {"stored_events", (PyCFunction)(void (*)(void))stored_events, METH_FASTCALL,
     "stored_events(events, first, timestamp) -> list | None: the Events an append of "
     "events returns (None: records.py makes them)."},
    {"decode_forwarded", (PyCFunction)(void (*)(void))decode_forwarded, METH_FASTCALL,
     "decode_forwarded(records) -> (events, others): the usual forwarded records as "
     "EncodedEvents, None and their index in others for the rest."},
    {"link_batch", (PyCFunction)(void (*)(void))link_batch, METH_FASTCALL,
     "link_batch(events, node_tag, hop_prefix) -> bytes | None: a mesh link's batch of "
     "local Events (None: another kind, wire.py encodes them)."},
    {"held_bytes", (PyCFunction)(void (*)(void))held_bytes, METH_FASTCALL,
     "held_bytes(events, per_event) -> int | None: the payload bytes and topic lengths "
     "of stored Events plus per_event each (None: another kind, tail.py counts them)."},
    {"decode_link", (PyCFunction)(void (*)(void))decode_link, METH_FASTCALL,
     "decode_link(payload, sender) -> (events, shape) | None: a mesh link's usual batch "
     "decoded and its hops checked (None: wire.py decodes it)."},
    {"restamp_all", (PyCFunction)(void (*)(void))restamp_all, METH_FASTCALL,
     "restamp_all(events, timestamp, checked_topics) -> list | None: the records of a "
     "batch of EncodedEvents under timestamp (None: records.py encodes it)."},
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
    if (PyModule_AddStringConstant(module, "IMPLEMENTATION", kind) < 0 ||
        PyModule_AddIntConstant(module, "RECORDS_API", RECORDS_API) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
