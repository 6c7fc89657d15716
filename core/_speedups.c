/* inlet's compiled hot-path helpers (an optional extension: setup.py; each has a Python twin it must equal).
 *
 * 1. normalise: the compiled front of core.time.normalise, the common RFC 3339 shapes with their own offset in one
 *    C call.
 * 2. needs_exact: core.exact_json's scan for number tokens a float would not give back as written.
 * 3. murmur2: Kafka's key hash (the Java client's default partitioner), which aiokafka computes in pure Python.
 * 4. envelope: core.envelope.Enveloper.envelope's event id, headers and Event in one call (see its section below).
 * 5. dump: a contract model's JSON value for the plain shapes, as pydantic's to_json writes it (its section below).
 * 6. checked_instance: contracts.base.checked_instance, a model from values its caller has checked (its section).
 *
 * Why (1): a normaliser written in Python cannot reach 30 % of datetime.fromisoformat's rate for values never seen
 * before (a Python call, the shape checks and building the Instant already cost 3-4x the C parse; measured in
 * bench/bench_time.py). This function answers, without entering the interpreter, exactly the values whose answer
 * is certain:
 *
 *   YYYY-MM-DD[Tt ]hh:mm[:ss[(.|,)f{1,6}]] followed by Z or +HH:MM / -HH:MM (at most 18:00), all ASCII digits,
 *   a real calendar date in years 1-9999, hours 00-23, seconds 00-59, and a UTC result within years 1-9999,
 *
 * plus the cache of results by string that the Python function keeps (core.time._SEEN, the same dict). Every
 * other value or call (another type, a naive local time, 24:00, a leap second, max_future_seconds given, a
 * keyword it does not know, ...) is handed to the Python function unchanged, so errors and every rule stay in
 * one place. tests/core/test_time_fast.py proves both give the same Instant, byte for byte.
 *
 * Why (2): the three regular expressions of core.exact_json cost ~4 us per 1 KB FHIR resource, twice orjson's
 * parse; one pass in C answers the same question (tests/core/test_exact_json.py compares both on generated text).
 *
 * Why (3): aiokafka's murmur2 costs ~6 us per key here; the sink caches it per key (core.sinks.kafka), but a feed
 * of many distinct entities on a topic of several partitions pays it for every new key. The same function in C:
 * ~0.05 us (tests/core/sinks/test_partitioner.py compares it with aiokafka's on generated keys).
 *
 * Memory safety: every index is checked against the length before it is read.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <datetime.h>
#include <stdint.h>

static PyObject *fallback;     /* core.time's Python normalise: everything this file does not answer */
static PyObject *seen;         /* core.time._SEEN: results by string, shared with the Python function */
static Py_ssize_t seen_max;    /* core.time._SEEN_MAX: the cache is emptied when full, as in Python */
static PyTypeObject *instant;  /* core.time.Instant, a tuple subclass (NamedTuple) */
static PyObject *utc;          /* datetime.UTC */
static PyObject *precisions[4]; /* "minute", "second", "millisecond", "microsecond": core.time's own objects */

static const char *const known_keywords[] = {"zone", "ambiguous", "nonexistent", "now", "max_future_seconds",
                                             "near", NULL};

static int is_digit(Py_UCS1 c) { return c >= '0' && c <= '9'; }

static int two(const Py_UCS1 *p) { return (p[0] - '0') * 10 + (p[1] - '0'); }

static int leap(long y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }

static int days_in_month(long y, int m) {
    static const int days[13] = {0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return m == 2 && leap(y) ? 29 : days[m];
}

/* Days since 0000-03-01 style civil arithmetic (proleptic Gregorian), after H. Hinnant's public-domain
 * algorithms; used only to move a wall time by its offset across a day, month or year boundary. */
static long days_from_civil(long y, int m, int d) {
    y -= m <= 2;
    long era = (y >= 0 ? y : y - 399) / 400;
    long yoe = y - era * 400;
    long doy = (153L * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    long doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe;
}

static void civil_from_days(long z, long *y, int *m, int *d) {
    long era = (z >= 0 ? z : z - 146096) / 146097;
    long doe = z - era * 146097;
    long yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    long doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    long mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = yoe + era * 400 + (*m <= 2);
}

/* The Instant for `value`, or NULL without an exception when the value is not one this file answers. */
static PyObject *parse(PyObject *value) {
    if (!PyUnicode_IS_ASCII(value)) return NULL;
    Py_ssize_t n = PyUnicode_GET_LENGTH(value);
    const Py_UCS1 *s = PyUnicode_1BYTE_DATA(value);
    Py_ssize_t body;
    int offset = 0; /* minutes east of UTC */
    if (n < 17) return NULL;
    if (s[n - 1] == 'Z') {
        body = n - 1;
    } else if (n >= 22 && (s[n - 6] == '+' || s[n - 6] == '-') && s[n - 3] == ':' && is_digit(s[n - 5]) &&
               is_digit(s[n - 4]) && is_digit(s[n - 2]) && is_digit(s[n - 1])) {
        int hours = two(s + n - 5), minutes = two(s + n - 2);
        if (minutes > 59 || hours * 60 + minutes > 18 * 60) return NULL;
        offset = (s[n - 6] == '+' ? 1 : -1) * (hours * 60 + minutes);
        body = n - 6;
    } else {
        return NULL;
    }
    int precision;
    if (body == 16) precision = 0;
    else if (body == 19) precision = 1;
    else if (body >= 21 && body <= 26) precision = body <= 23 ? 2 : 3;
    else return NULL;
    if (s[4] != '-' || s[7] != '-' || (s[10] != 'T' && s[10] != 't' && s[10] != ' ') || s[13] != ':') return NULL;
    if (body >= 19 && s[16] != ':') return NULL;
    if (body >= 21 && s[19] != '.' && s[19] != ',') return NULL;
    static const int digits_at[] = {0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18};
    for (size_t i = 0; i < sizeof digits_at / sizeof digits_at[0] && digits_at[i] < body; i++) {
        if (!is_digit(s[digits_at[i]])) return NULL;
    }
    int us = 0;
    for (Py_ssize_t i = 20; i < 26; i++) {
        if (i < body) {
            if (!is_digit(s[i])) return NULL;
            us = us * 10 + (s[i] - '0');
        } else {
            us *= 10;
        }
    }
    long year = two(s) * 100 + two(s + 2);
    int month = two(s + 5), day = two(s + 8), hour = two(s + 11), minute = two(s + 14);
    int second = body >= 19 ? two(s + 17) : 0;
    if (year < 1 || month < 1 || month > 12 || day < 1 || day > days_in_month(year, month)) return NULL;
    if (hour > 23 || minute > 59 || second > 59) return NULL; /* 24:00 and leap seconds: Python's rules */
    if (offset) {
        long minutes = days_from_civil(year, month, day) * 1440 + hour * 60 + minute - offset;
        long days = minutes >= 0 ? minutes / 1440 : -((-minutes + 1439) / 1440);
        long rest = minutes - days * 1440;
        civil_from_days(days, &year, &month, &day);
        hour = (int)(rest / 60);
        minute = (int)(rest % 60);
        if (year < 1 || year > 9999) return NULL; /* Python raises its own error for these */
    }
    PyObject *moment = PyDateTimeAPI->DateTime_FromDateAndTime((int)year, month, day, hour, minute, second, us,
                                                               utc, PyDateTimeAPI->DateTimeType);
    if (moment == NULL) return NULL; /* with the exception set */
    PyObject *result = instant->tp_alloc(instant, 2);
    if (result == NULL) {
        Py_DECREF(moment);
        return NULL;
    }
    Py_INCREF(precisions[precision]);
    PyTuple_SET_ITEM(result, 0, moment);
    PyTuple_SET_ITEM(result, 1, precisions[precision]);
    return result;
}

/* Whether the call is one this file may answer: a str value, no max_future_seconds, only known keywords. */
static int answerable(PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    if (nargs < 1 || nargs > 2 || !PyUnicode_CheckExact(args[0])) return 0;
    if (kwnames == NULL) return 1;
    Py_ssize_t count = PyTuple_GET_SIZE(kwnames);
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *name = PyTuple_GET_ITEM(kwnames, i);
        int known = 0;
        for (const char *const *k = known_keywords; *k != NULL; k++) {
            if (PyUnicode_CompareWithASCIIString(name, *k) == 0) {
                known = 1;
                if ((k == known_keywords && nargs == 2) ||
                    (k == known_keywords + 4 && args[nargs + i] != Py_None)) {
                    return 0; /* zone twice (Python's TypeError), or the future bound (checked in Python) */
                }
                break;
            }
        }
        if (!known) return 0;
    }
    return 1;
}

static PyObject *normalise(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    (void)self;
    if (fallback != NULL && answerable(args, nargs, kwnames)) {
        PyObject *value = args[0];
        PyObject *hit = PyDict_GetItemWithError(seen, value);
        if (hit != NULL) return Py_NewRef(hit);
        if (PyErr_Occurred()) return NULL;
        PyObject *result = parse(value);
        if (result != NULL) {
            if (PyDict_GET_SIZE(seen) >= seen_max) PyDict_Clear(seen);
            if (PyDict_SetItem(seen, value, result) < 0) {
                Py_DECREF(result);
                return NULL;
            }
            return result;
        }
        if (PyErr_Occurred()) return NULL;
    }
    if (fallback == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "inlet.core._speedups.install() was not called");
        return NULL;
    }
    return PyObject_Vectorcall(fallback, args, nargs, kwnames);
}

/* --- needs_exact: the same answer as core.exact_json.PATTERNS (read that docstring first) --------------------- */

static int json_space(unsigned char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

static int regex_space(unsigned char c) { return json_space(c) || c == '\f' || c == '\v'; } /* bytes \s */

static int number_terminator(unsigned char c) { return json_space(c) || c == ',' || c == ']' || c == '}'; }

/* Whether a token the pattern _TOKEN matches starts at p (just after the delimiter). */
static int token_at(const unsigned char *p, const unsigned char *end) {
    while (p < end && json_space(*p)) p++;
    if (p < end && *p == '-') p++;
    if (p >= end || !is_digit(*p)) return 0;
    p++; /* the mandatory first digit */
    /* 16+ digits: 15 more, each optionally after a '.' */
    const unsigned char *q = p;
    int units = 0;
    while (units < 15 && q < end) {
        if (is_digit(*q)) q++;
        else if (*q == '.' && q + 1 < end && is_digit(q[1])) q += 2;
        else break;
        units++;
    }
    if (units == 15) return 1;
    const unsigned char *run = p;
    while (run < end && is_digit(*run)) run++; /* the integer digits after the first */
    if (run < end && (*run == 'e' || *run == 'E')) return 1; /* an exponent right after the integer */
    if (run < end && *run == '.') {
        const unsigned char *frac = run + 1, *f = frac;
        while (f < end && is_digit(*f)) f++;
        if (f > frac && f < end && (*f == 'e' || *f == 'E')) return 1;       /* fraction, then an exponent */
        if (f - frac >= 2 && f[-1] == '0' && f < end && number_terminator(*f)) return 1; /* 5.10 */
    }
    return 0;
}

static PyObject *needs_exact(PyObject *self, PyObject *arg) {
    (void)self;
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) return NULL;
    const unsigned char *data = view.buf, *end = data + view.len;
    int found = 0;
    for (const unsigned char *p = data; p < end && !found; p++) {
        unsigned char c = *p;
        if (c == ':') found = p > data && (p[-1] == '"' || regex_space(p[-1])) && token_at(p + 1, end);
        else if (c == '[' || c == ',') found = token_at(p + 1, end);
    }
    PyBuffer_Release(&view);
    return PyBool_FromLong(found);
}

/* --- murmur2: org.apache.kafka.common.utils.Utils.murmur2, as aiokafka.partitioner.murmur2 returns it ---------- */

static PyObject *murmur2(PyObject *self, PyObject *arg) {
    (void)self;
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) return NULL;
    const unsigned char *d = view.buf;
    Py_ssize_t length = view.len;
    const uint32_t m = 0x5bd1e995;
    uint32_t h = 0x9747b28cu ^ (uint32_t)length;
    for (Py_ssize_t i = 0; i + 4 <= length; i += 4) {
        uint32_t k = (uint32_t)d[i] | ((uint32_t)d[i + 1] << 8) | ((uint32_t)d[i + 2] << 16) |
                     ((uint32_t)d[i + 3] << 24);
        k *= m;
        k ^= k >> 24;
        k *= m;
        h *= m;
        h ^= k;
    }
    Py_ssize_t tail = length & ~(Py_ssize_t)3;
    switch (length & 3) {
    case 3:
        h ^= (uint32_t)d[tail + 2] << 16;
        /* fall through */
    case 2:
        h ^= (uint32_t)d[tail + 1] << 8;
        /* fall through */
    case 1:
        h ^= (uint32_t)d[tail];
        h *= m;
    }
    h ^= h >> 13;
    h *= m;
    h ^= h >> 15;
    PyBuffer_Release(&view);
    return PyLong_FromUnsignedLong(h);
}

/* --- envelope: core.envelope.Enveloper.envelope after the model's own calls ----------------------------------
 *
 * The event id (SHA-1 of the integration's namespace and the record's name, as UUID version 5 text), the header
 * list and the Event, in one call: in Python these cost ~2.3 us per event (the id's name and hex text, eleven
 * header tuples, the CloudEvents time's isoformat), here ~1. The SHA-1 itself stays hashlib's (OpenSSL uses the
 * CPU's SHA instructions: a portable C SHA-1 measured 5x slower here). The Python twin is
 * core.envelope.Enveloper._envelope_python; tests/core/test_envelope_fast.py proves both build the same events,
 * byte for byte. */

static PyObject *name_ce_id, *name_ce_subject, *name_ce_time, *name_encode, *name_copy, *name_update, *name_digest;

/* value.encode(): a str's UTF-8 (strict), anything else through its own encode method, as Python would. */
static PyObject *encoded(PyObject *value) {
    if (PyUnicode_CheckExact(value)) return PyUnicode_AsUTF8String(value);
    return PyObject_CallMethodNoArgs(value, name_encode);
}

static char *digits(char *at, int value, int width) {
    for (int i = width - 1; i >= 0; i--, value /= 10) at[i] = (char)('0' + value % 10);
    return at + width;
}

/* RFC 3339 UTC text with a Z of an exact datetime in datetime.UTC, isoformat() without the offset plus "Z", written
 * to out (at least 32 chars); returns its length. */
static Py_ssize_t utc_chars(PyObject *when, char *out) {
    char *at = out;
    at = digits(at, PyDateTime_GET_YEAR(when), 4);
    *at++ = '-';
    at = digits(at, PyDateTime_GET_MONTH(when), 2);
    *at++ = '-';
    at = digits(at, PyDateTime_GET_DAY(when), 2);
    *at++ = 'T';
    at = digits(at, PyDateTime_DATE_GET_HOUR(when), 2);
    *at++ = ':';
    at = digits(at, PyDateTime_DATE_GET_MINUTE(when), 2);
    *at++ = ':';
    at = digits(at, PyDateTime_DATE_GET_SECOND(when), 2);
    int us = PyDateTime_DATE_GET_MICROSECOND(when);
    if (us) {
        *at++ = '.';
        at = digits(at, us, 6);
    }
    *at++ = 'Z';
    return at - out;
}

static PyObject *utc_text(PyObject *when) {
    char text[32];
    return PyBytes_FromStringAndSize(text, utc_chars(when, text));
}

static PyObject *pair(PyObject *name, PyObject *value) {
    if (value == NULL) return NULL;
    PyObject *t = PyTuple_Pack(2, name, value);
    Py_DECREF(value);
    return t;
}

/* envelope(event_type, info, common, namespace, source_key, source_version, ordinal, subject, key, value, when)
 *   info: the contract's (topic, id name, ce_type, ce_dataschema, ce_contractversion headers)
 *   common: the integration's leading headers (a list); namespace: a hashlib SHA-1 that has hashed its UUID bytes
 *   when: None (no ce_time), bytes (the ce_time text), or an exact datetime in datetime.UTC */
static PyObject *envelope(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 11) {
        PyErr_SetString(PyExc_TypeError, "envelope() takes 11 arguments");
        return NULL;
    }
    PyObject *event_type = args[0], *info = args[1], *common = args[2], *ns = args[3], *when = args[10];
    if (!PyTuple_CheckExact(info) || PyTuple_GET_SIZE(info) != 5 || !PyList_CheckExact(common) ||
        !PyBytes_CheckExact(args[9])) {
        PyErr_SetString(PyExc_TypeError, "envelope(): info is a 5-tuple, common a list, value bytes");
        return NULL;
    }
    int has_time = when != Py_None;
    if (has_time && !PyBytes_CheckExact(when) &&
        !(PyDateTime_CheckExact(when) && PyDateTime_DATE_GET_TZINFO(when) == PyDateTime_TimeZone_UTC)) {
        PyErr_SetString(PyExc_TypeError, "envelope(): when is None, bytes or a datetime in datetime.UTC");
        return NULL;
    }
    /* The id: namespace's SHA-1 state (hashlib's, OpenSSL's SHA instructions) updated with the record's name,
     * f"{source_key}\x1f{source_version}\x1f{id name}\x1f{ordinal}", as core.envelope.EventIds does. */
    PyObject *parts[4] = {NULL, NULL, NULL, NULL};
    PyObject *sources[4] = {args[4], args[5], PyTuple_GET_ITEM(info, 1), args[6]};
    const char *utf8[4];
    Py_ssize_t sizes[4], length = 3;
    PyObject *name = NULL, *hash = NULL, *digest_bytes = NULL;
    for (int i = 0; i < 4; i++) {
        parts[i] = PyObject_Format(sources[i], NULL); /* f"{value}": a str as it is, anything else format()ted */
        if (parts[i] == NULL || (utf8[i] = PyUnicode_AsUTF8AndSize(parts[i], &sizes[i])) == NULL) goto fail_id;
        length += sizes[i];
    }
    name = PyBytes_FromStringAndSize(NULL, length);
    if (name == NULL) goto fail_id;
    char *at = PyBytes_AS_STRING(name);
    for (int i = 0; i < 4; i++) {
        if (i) *at++ = 0x1f;
        memcpy(at, utf8[i], (size_t)sizes[i]);
        at += sizes[i];
    }
    hash = PyObject_CallMethodNoArgs(ns, name_copy);
    if (hash == NULL) goto fail_id;
    PyObject *updated = PyObject_CallMethodOneArg(hash, name_update, name);
    if (updated == NULL) goto fail_id;
    Py_DECREF(updated);
    digest_bytes = PyObject_CallMethodNoArgs(hash, name_digest);
    if (digest_bytes == NULL || !PyBytes_Check(digest_bytes) || PyBytes_GET_SIZE(digest_bytes) != 20) {
        if (digest_bytes != NULL) PyErr_SetString(PyExc_TypeError, "envelope(): namespace is not a SHA-1 state");
        goto fail_id;
    }
    unsigned char digest[20];
    memcpy(digest, PyBytes_AS_STRING(digest_bytes), 20);
    for (int i = 0; i < 4; i++) Py_DECREF(parts[i]);
    Py_DECREF(name);
    Py_DECREF(hash);
    Py_DECREF(digest_bytes);
    digest[6] = (unsigned char)((digest[6] & 0x0f) | 0x50); /* version 5 */
    digest[8] = (unsigned char)((digest[8] & 0x3f) | 0x80); /* RFC 4122 variant */
    static const char hex[] = "0123456789abcdef";
    char text[36];
    for (int i = 0, j = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10) text[j++] = '-';
        text[j++] = hex[digest[i] >> 4];
        text[j++] = hex[digest[i] & 15];
    }
    PyObject *eid = PyUnicode_FromStringAndSize(text, 36);
    PyObject *key = encoded(args[8]);
    Py_ssize_t n_common = PyList_GET_SIZE(common);
    PyObject *headers = PyList_New(n_common + 5 + has_time);
    PyObject *event = NULL;
    if (eid == NULL || key == NULL || headers == NULL) goto done;
    for (Py_ssize_t i = 0; i < n_common; i++) PyList_SET_ITEM(headers, i, Py_NewRef(PyList_GET_ITEM(common, i)));
    PyObject *h;
    h = pair(name_ce_id, PyBytes_FromStringAndSize(text, 36));
    if (h == NULL) goto done;
    PyList_SET_ITEM(headers, n_common, h);
    PyList_SET_ITEM(headers, n_common + 1, Py_NewRef(PyTuple_GET_ITEM(info, 2)));
    h = pair(name_ce_subject, encoded(args[7]));
    if (h == NULL) goto done;
    PyList_SET_ITEM(headers, n_common + 2, h);
    PyList_SET_ITEM(headers, n_common + 3, Py_NewRef(PyTuple_GET_ITEM(info, 3)));
    PyList_SET_ITEM(headers, n_common + 4, Py_NewRef(PyTuple_GET_ITEM(info, 4)));
    if (has_time) {
        h = pair(name_ce_time, PyBytes_CheckExact(when) ? Py_NewRef(when) : utc_text(when));
        if (h == NULL) goto done;
        PyList_SET_ITEM(headers, n_common + 5, h);
    }
    PyObject *fields[5] = {PyTuple_GET_ITEM(info, 0), key, args[9], headers, eid};
    event = PyObject_Vectorcall(event_type, fields, 5, NULL);
done: /* a list slot still NULL on an error is allowed: list deallocation skips it */
    Py_XDECREF(eid);
    Py_XDECREF(key);
    Py_XDECREF(headers);
    return event;
fail_id:
    for (int i = 0; i < 4; i++) Py_XDECREF(parts[i]);
    Py_XDECREF(name);
    Py_XDECREF(hash);
    Py_XDECREF(digest_bytes);
    return NULL;
}

/* --- dump: a contract model's JSON value, as pydantic's to_json writes it, for the plain shapes ------------------
 *
 * pydantic's to_json costs ~4.4 us for a 700-byte FHIR Observation, a sixth of an event's whole budget. For models
 * whose serialisation has nothing custom (core.envelope's _learn decides, per class: no aliases, no custom
 * serialisers, no excluded or computed fields, no ser_json_* settings), the JSON is a walk of the fields in
 * declaration order. This writes it for the values whose text is certain: None, bools, ints of 64 bits, floats
 * whose repr is pydantic's text (zero, and 1e-4 <= |x| < 1e16), strings (escaped as serde_json does), lists,
 * datetimes in datetime.UTC, and nested models of a class the field declares (~1.2 us for that Observation).
 * Anything else returns None and pydantic writes the model. tests/core/test_envelope_fast.py compares both, byte
 * for byte. */

typedef struct {
    char *data;
    Py_ssize_t size, capacity;
} out_buffer;

static int grow(out_buffer *b, Py_ssize_t more) {
    if (b->size + more <= b->capacity) return 0;
    Py_ssize_t capacity = (b->capacity + more) * 2;
    char *data = PyMem_Realloc(b->data, (size_t)capacity);
    if (data == NULL) return -1;
    b->data = data;
    b->capacity = capacity;
    return 0;
}

static int put(out_buffer *b, const char *text, Py_ssize_t n) {
    if (grow(b, n) < 0) return -1;
    memcpy(b->data + b->size, text, (size_t)n);
    b->size += n;
    return 0;
}

static unsigned char needs_escape[256]; /* controls, '"' and '\\': set at import */

/* A JSON string as serde_json writes it: '"' and '\\' escaped, \b \f \n \r \t, other controls as \u00xx. */
static int put_string(out_buffer *b, const char *text, Py_ssize_t n) {
    static const char hex[] = "0123456789abcdef";
    if (grow(b, n * 6 + 2) < 0) return -1;
    char *at = b->data + b->size;
    *at++ = '"';
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)text[i];
        if (!needs_escape[c]) {
            *at++ = (char)c;
            continue;
        }
        *at++ = '\\';
        switch (c) {
        case '"': *at++ = '"'; break;
        case '\\': *at++ = '\\'; break;
        case '\b': *at++ = 'b'; break;
        case '\f': *at++ = 'f'; break;
        case '\n': *at++ = 'n'; break;
        case '\r': *at++ = 'r'; break;
        case '\t': *at++ = 't'; break;
        default:
            *at++ = 'u';
            *at++ = '0';
            *at++ = '0';
            *at++ = hex[c >> 4];
            *at++ = hex[c & 15];
        }
    }
    *at++ = '"';
    b->size = at - b->data;
    return 0;
}

/* 1: written; 0: not a shape this writes (pydantic writes the model); -1: an error is set. */
static int put_value(out_buffer *b, PyObject *value, PyObject *allowed, PyObject *specs, int depth);

static int put_model(out_buffer *b, PyObject *model, PyObject *specs, int depth) {
    PyObject *spec = PyDict_GetItemWithError(specs, (PyObject *)Py_TYPE(model));
    if (spec == NULL) return PyErr_Occurred() ? -1 : 0;
    if (!PyTuple_CheckExact(spec)) return 0; /* a class pydantic must write */
    PyObject *fields = PyObject_GenericGetDict(model, NULL);
    if (fields == NULL) return -1;
    int done = !PyDict_CheckExact(fields) ? 0 : put(b, "{", 1) < 0 ? -1 : 1;
    /* A validated model's __dict__ holds its fields in declaration order: walk it alongside the spec, and look a
     * field up by name only where the order differs (a model built from a dict in another order). */
    Py_ssize_t pos = 0;
    int in_order = 1;
    for (Py_ssize_t i = 0; done > 0 && i < PyTuple_GET_SIZE(spec); i++) {
        PyObject *field = PyTuple_GET_ITEM(spec, i); /* (name, its JSON key bytes with the colon, allowed) */
        PyObject *name = PyTuple_GET_ITEM(field, 0), *next_key, *value = NULL;
        if (in_order && PyDict_Next(fields, &pos, &next_key, &value) &&
            (next_key == name || (PyUnicode_CheckExact(next_key) && PyUnicode_Compare(next_key, name) == 0))) {
            /* value is the field's */
        } else {
            in_order = 0;
            value = PyDict_GetItemWithError(fields, name);
        }
        PyObject *key = PyTuple_GET_ITEM(field, 1);
        if (value == NULL) {
            done = PyErr_Occurred() ? -1 : 0;
        } else if ((i && put(b, ",", 1) < 0) || put(b, PyBytes_AS_STRING(key), PyBytes_GET_SIZE(key)) < 0) {
            done = -1;
        } else {
            done = put_value(b, value, PyTuple_GET_ITEM(field, 2), specs, depth + 1);
        }
    }
    Py_DECREF(fields);
    if (done > 0 && put(b, "}", 1) < 0) done = -1;
    return done;
}

static int put_value(out_buffer *b, PyObject *value, PyObject *allowed, PyObject *specs, int depth) {
    if (depth > 32) return 0;
    char text[40];
    if (value == Py_None) return put(b, "null", 4) < 0 ? -1 : 1;
    if (value == Py_True) return put(b, "true", 4) < 0 ? -1 : 1;
    if (value == Py_False) return put(b, "false", 5) < 0 ? -1 : 1;
    if (PyUnicode_CheckExact(value)) {
        Py_ssize_t n;
        const char *utf8 = PyUnicode_AsUTF8AndSize(value, &n);
        if (utf8 == NULL) { /* a lone surrogate: pydantic says what it says about it */
            PyErr_Clear();
            return 0;
        }
        return put_string(b, utf8, n) < 0 ? -1 : 1;
    }
    if (PyFloat_CheckExact(value)) {
        double x = PyFloat_AS_DOUBLE(value), m = x < 0 ? -x : x;
        if (!(m == 0.0 || (m >= 1e-4 && m < 1e16))) return 0;
        char *repr = PyOS_double_to_string(x, 'r', 0, Py_DTSF_ADD_DOT_0, NULL);
        if (repr == NULL) return -1;
        int r = put(b, repr, (Py_ssize_t)strlen(repr));
        PyMem_Free(repr);
        return r < 0 ? -1 : 1;
    }
    if (PyLong_CheckExact(value)) {
        int overflow;
        long long v = PyLong_AsLongLongAndOverflow(value, &overflow);
        if (overflow) return 0;
        if (v == -1 && PyErr_Occurred()) return -1;
        return put(b, text, snprintf(text, sizeof text, "%lld", v)) < 0 ? -1 : 1;
    }
    if (PyList_CheckExact(value)) {
        if (put(b, "[", 1) < 0) return -1;
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(value); i++) {
            if (i && put(b, ",", 1) < 0) return -1;
            int done = put_value(b, PyList_GET_ITEM(value, i), allowed, specs, depth + 1);
            if (done <= 0) return done;
        }
        return put(b, "]", 1) < 0 ? -1 : 1;
    }
    if (PyDateTime_CheckExact(value)) {
        if (PyDateTime_DATE_GET_TZINFO(value) != PyDateTime_TimeZone_UTC) return 0;
        text[0] = '"';
        Py_ssize_t n = 1 + utc_chars(value, text + 1);
        text[n++] = '"';
        return put(b, text, n) < 0 ? -1 : 1;
    }
    if (allowed != Py_None) { /* a nested model, of a class the field declares (not a subclass of one) */
        int ok = PySet_Contains(allowed, (PyObject *)Py_TYPE(value));
        if (ok <= 0) return ok;
        return put_model(b, value, specs, depth);
    }
    return 0;
}

/* dump(model, specs) -> bytes | None; specs: model class -> tuple of (name, b'"name":', allowed classes | None)
 * for each field in declaration order, or None for a class pydantic must write. */
static PyObject *dump(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 2 || !PyDict_CheckExact(args[1])) {
        PyErr_SetString(PyExc_TypeError, "dump(model, specs): specs is a dict");
        return NULL;
    }
    out_buffer b = {NULL, 0, 0};
    if (grow(&b, 1024) < 0) return PyErr_NoMemory();
    int done = put_model(&b, args[0], args[1], 0);
    PyObject *result = done > 0 ? PyBytes_FromStringAndSize(b.data, b.size) : NULL;
    PyMem_Free(b.data);
    if (done == 0) Py_RETURN_NONE;
    if (done < 0 && !PyErr_Occurred()) PyErr_NoMemory();
    return result;
}

/* --- 6. checked_instance ----------------------------------------------------------------------------------
 * contracts.base.checked_instance: what object.__new__(cls) and four object.__setattr__ calls do, in one C call.
 * The hot paths build ~4 models per FHIR Observation and 5 per meter reading this way; the Python function costs
 * ~0.52 us here (each object.__setattr__ is a call through the interpreter), this one ~0.13 us. Same instance state
 * (tests/contracts/test_checked_instance.py): __dict__ is `values` itself, __pydantic_fields_set__ a new set of
 * `given`, __pydantic_extra__ and __pydantic_private__ None. The slots are pydantic's member descriptors, looked up
 * once on BaseModel by model_slots(). */
static PyTypeObject *model_base;    /* pydantic.BaseModel */
static PyObject *model_slot_set[3]; /* its __pydantic_fields_set__, __pydantic_extra__, __pydantic_private__ */

static PyObject *model_slots(PyObject *self, PyObject *base) {
    (void)self;
    static const char *const names[3] = {"__pydantic_fields_set__", "__pydantic_extra__", "__pydantic_private__"};
    if (!PyType_Check(base)) {
        PyErr_SetString(PyExc_TypeError, "model_slots(BaseModel)");
        return NULL;
    }
    PyObject *found[3];
    for (int i = 0; i < 3; i++) {
        found[i] = PyDict_GetItemString(((PyTypeObject *)base)->tp_dict, names[i]); /* borrowed */
        if (found[i] == NULL || Py_TYPE(found[i])->tp_descr_set == NULL) {
            PyErr_Format(PyExc_TypeError, "model_slots: %R has no slot %s", base, names[i]);
            return NULL;
        }
    }
    for (int i = 0; i < 3; i++) Py_XSETREF(model_slot_set[i], Py_NewRef(found[i]));
    Py_XSETREF(model_base, (PyTypeObject *)Py_NewRef(base));
    Py_RETURN_NONE;
}

static PyObject *checked_instance(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (model_base == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "checked_instance before model_slots(BaseModel)");
        return NULL;
    }
    if (nargs != 3 || !PyType_Check(args[0]) || !PyType_IsSubtype((PyTypeObject *)args[0], model_base) ||
        !PyDict_CheckExact(args[1])) {
        PyErr_SetString(PyExc_TypeError, "checked_instance(model class, dict of values, field names given)");
        return NULL;
    }
    PyTypeObject *cls = (PyTypeObject *)args[0];
    if (cls->tp_flags & Py_TPFLAGS_IS_ABSTRACT) { /* what object.__new__ refuses */
        PyErr_Format(PyExc_TypeError, "Can't instantiate abstract class %s", cls->tp_name);
        return NULL;
    }
    PyObject *given = PySet_New(args[2]);
    if (given == NULL) return NULL;
    PyObject *model = cls->tp_alloc(cls, 0);
    if (model == NULL || PyObject_GenericSetDict(model, args[1], NULL) < 0 ||
        Py_TYPE(model_slot_set[0])->tp_descr_set(model_slot_set[0], model, given) < 0 ||
        Py_TYPE(model_slot_set[1])->tp_descr_set(model_slot_set[1], model, Py_None) < 0 ||
        Py_TYPE(model_slot_set[2])->tp_descr_set(model_slot_set[2], model, Py_None) < 0) {
        Py_XDECREF(model);
        model = NULL;
    }
    Py_DECREF(given);
    return model;
}

static PyObject *install(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *fn, *cache, *cls, *tz, *names;
    Py_ssize_t limit;
    if (!PyArg_ParseTuple(args, "OO!O!OnO!:install", &fn, &PyDict_Type, &cache, &PyType_Type, &cls, &tz, &limit,
                          &PyTuple_Type, &names)) {
        return NULL;
    }
    if (!PyType_IsSubtype((PyTypeObject *)cls, &PyTuple_Type) || PyTuple_GET_SIZE(names) != 4 || limit < 1) {
        PyErr_SetString(PyExc_ValueError, "install(fallback, cache, tuple subclass, tzinfo, limit, 4 precisions)");
        return NULL;
    }
    for (int i = 0; i < 4; i++) {
        Py_XSETREF(precisions[i], Py_NewRef(PyTuple_GET_ITEM(names, i)));
    }
    Py_XSETREF(fallback, Py_NewRef(fn));
    Py_XSETREF(seen, Py_NewRef(cache));
    Py_XSETREF(instant, (PyTypeObject *)Py_NewRef(cls));
    Py_XSETREF(utc, Py_NewRef(tz));
    seen_max = limit;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"normalise", (PyCFunction)(void (*)(void))normalise, METH_FASTCALL | METH_KEYWORDS,
     "core.time.normalise with the common offset-bearing RFC 3339 shapes read in C (see core/_speedups.c)."},
    {"needs_exact", needs_exact, METH_O,
     "needs_exact(data): core.exact_json.needs_exact in one pass over the bytes (see core/_speedups.c)."},
    {"murmur2", murmur2, METH_O, "murmur2(key): Kafka's default partitioner hash, as aiokafka's murmur2 returns it."},
    {"envelope", (PyCFunction)(void (*)(void))envelope, METH_FASTCALL,
     "envelope(...): core.envelope.Enveloper.envelope's id, headers and Event in one call (see core/_speedups.c)."},
    {"dump", (PyCFunction)(void (*)(void))dump, METH_FASTCALL,
     "dump(model, specs): a plain contract model's JSON as pydantic writes it, or None (see core/_speedups.c)."},
    {"checked_instance", (PyCFunction)(void (*)(void))checked_instance, METH_FASTCALL,
     "checked_instance(cls, values, given): contracts.base.checked_instance in one call (see core/_speedups.c)."},
    {"model_slots", model_slots, METH_O, "model_slots(BaseModel): the slots checked_instance sets, looked up once."},
    {"install", install, METH_VARARGS,
     "install(fallback, cache, instant_type, utc, cache_max, precisions): what normalise hands on and returns."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "inlet.core._speedups", NULL, -1, methods};

PyMODINIT_FUNC PyInit__speedups(void) {
    PyDateTime_IMPORT;
    if (PyDateTimeAPI == NULL) return NULL;
    for (int c = 0; c < 256; c++) needs_escape[c] = c < 0x20 || c == '"' || c == '\\';
    name_ce_id = PyUnicode_InternFromString("ce_id");
    name_ce_subject = PyUnicode_InternFromString("ce_subject");
    name_ce_time = PyUnicode_InternFromString("ce_time");
    name_encode = PyUnicode_InternFromString("encode");
    name_copy = PyUnicode_InternFromString("copy");
    name_update = PyUnicode_InternFromString("update");
    name_digest = PyUnicode_InternFromString("digest");
    if (name_ce_id == NULL || name_ce_subject == NULL || name_ce_time == NULL || name_encode == NULL ||
        name_copy == NULL || name_update == NULL || name_digest == NULL) {
        return NULL;
    }
    return PyModule_Create(&module);
}
