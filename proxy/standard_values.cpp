// Immutable standard values <-> capnp StandardValue: by value, rebuilt without the sender's code.
#include "proxy/standard_values.h"

#include "protocol/limits.h"
#include "proxy/value_codec.h"

#include <datetime.h>
#include <kj/debug.h>

#include <string_view>

namespace pi {

namespace {

// New reference or error_already_set.
py::object steal(PyObject* object) {
  if (object == nullptr) throw py::error_already_set();
  return py::reinterpret_steal<py::object>(object);
}

py::object borrow(PyObject* object) { return py::reinterpret_borrow<py::object>(object); }

// A call the peer's fields feed: a Python error becomes a peer error (kj FAILED) naming `what`.
py::object rebuilt(PyObject* made, const char* what) {
  if (made != nullptr) return py::reinterpret_steal<py::object>(made);
  py::error_already_set error;
  KJ_FAIL_REQUIRE("peer sent a standard value that does not rebuild", what, error.what());
}

// The dict of real module `name` in sys.modules (borrowed), or null. `exact`: a module of
// exactly ModuleType (the stdlib's); otherwise a subclass will do (its own dict is read).
PyObject* moduleDict(PyObject* name, bool exact) {
  PyObject* module = PyDict_GetItemWithError(PyImport_GetModuleDict(), name);  // borrowed
  if (module == nullptr) {
    PyErr_Clear();
    return nullptr;
  }
  if (exact ? !PyModule_CheckExact(module) : !PyModule_Check(module)) return nullptr;
  return PyModule_GetDict(module);
}

PyObject* moduleDict(const char* name) {
  py::object key = steal(PyUnicode_FromString(name));
  return moduleDict(key.ptr(), true);
}

// A class in `dict` (borrowed), as a held reference, or empty.
py::object classIn(PyObject* dict, const char* name) {
  PyObject* found = dict != nullptr ? PyDict_GetItemString(dict, name) : nullptr;
  return found != nullptr && PyType_Check(found) ? borrow(found) : py::object();
}

const PyDateTime_CAPI* api(const void* pointer) {
  return static_cast<const PyDateTime_CAPI*>(pointer);
}

std::string_view textOf(capnp::Text::Reader text) { return {text.cStr(), text.size()}; }

kj::ArrayPtr<const kj::byte> bytesOf(std::string_view text) {
  return kj::arrayPtr(reinterpret_cast<const kj::byte*>(text.data()), text.size());
}

// str as UTF-8 with lone surrogates as themselves ('surrogatepass', as Value.str), or false
// when longer than kMaxStandardTextBytes.
bool utf8Of(PyObject* text, std::string& out) {
  if (!PyUnicode_Check(text)) return false;
  Py_ssize_t size = 0;
  if (const char* cached = PyUnicode_AsUTF8AndSize(text, &size)) {  // the str's own UTF-8
    if (size_t(size) > kMaxStandardTextBytes) return false;
    out.assign(cached, size_t(size));
    return true;
  }
  PyErr_Clear();  // lone surrogates
  py::object encoded = steal(PyUnicode_AsEncodedString(text, "utf-8", "surrogatepass"));
  if (size_t(PyBytes_GET_SIZE(encoded.ptr())) > kMaxStandardTextBytes) return false;
  out.assign(PyBytes_AS_STRING(encoded.ptr()), size_t(PyBytes_GET_SIZE(encoded.ptr())));
  return true;
}

py::object strOf(capnp::Data::Reader data) {
  KJ_REQUIRE(data.size() <= kMaxStandardTextBytes, "peer sent standard text over the size limit",
             data.size());
  return rebuilt(PyUnicode_DecodeUTF8(reinterpret_cast<const char*>(data.begin()),
                                      Py_ssize_t(data.size()), "surrogatepass"),
                 "text");
}

// An int as two's complement, little-endian, minimal length, or false when it has more than
// kMaxFractionBits bits.
bool intBytes(PyObject* value, std::string& out) {
  py::object bits = steal(PyObject_CallMethod(value, "bit_length", nullptr));
  size_t n = PyLong_AsSize_t(bits.ptr());
  if (n == size_t(-1) && PyErr_Occurred()) throw py::error_already_set();
  if (n > kMaxFractionBits) return false;
  py::object toBytes = steal(PyObject_GetAttrString(value, "to_bytes"));
  py::dict keywords;
  keywords["signed"] = py::bool_(true);
  py::object args = py::make_tuple(Py_ssize_t(n / 8 + 1), "little");
  py::object encoded = steal(PyObject_Call(toBytes.ptr(), args.ptr(), keywords.ptr()));
  out.assign(PyBytes_AS_STRING(encoded.ptr()), size_t(PyBytes_GET_SIZE(encoded.ptr())));
  return true;
}

py::object intOf(capnp::Data::Reader data) {
  KJ_REQUIRE(data.size() > 0 && data.size() <= kMaxFractionBits / 8 + 1,
             "peer sent a Fraction term of a bad size", data.size());
  py::bytes bytes(reinterpret_cast<const char*>(data.begin()), data.size());
  py::object value = borrow(reinterpret_cast<PyObject*>(&PyLong_Type))
                         .attr("from_bytes")(bytes, "little", py::arg("signed") = true);
  KJ_REQUIRE(value.attr("bit_length")().cast<size_t>() <= kMaxFractionBits,
             "peer sent a Fraction term over the size limit");
  return value;
}

bool isLeap(unsigned year) { return year % 4 == 0 && (year % 100 != 0 || year % 400 == 0); }

void checkDate(wire::Date::Reader date) {
  static constexpr unsigned kDays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  unsigned year = date.getYear(), month = date.getMonth(), day = date.getDay();
  KJ_REQUIRE(year >= 1 && year <= 9999 && month >= 1 && month <= 12, "peer sent a bad date",
             year, month);
  unsigned length = kDays[month - 1] + (month == 2 && isLeap(year) ? 1 : 0);
  KJ_REQUIRE(day >= 1 && day <= length, "peer sent a bad date", year, month, day);
}

void checkTime(wire::Time::Reader time) {
  KJ_REQUIRE(time.getHour() < 24 && time.getMinute() < 60 && time.getSecond() < 60 &&
                 time.getMicrosecond() < 1000000,
             "peer sent a bad time", time.getHour(), time.getMinute(), time.getSecond(),
             time.getMicrosecond());
}

constexpr int64_t kMicrosecondsPerDay = int64_t{86400} * 1000000;

// A datetime.timedelta's fields (normalized by the type).
void writeDelta(PyObject* delta, wire::TimeDelta::Builder out) {
  out.setDays(PyDateTime_DELTA_GET_DAYS(delta));
  out.setSeconds(uint32_t(PyDateTime_DELTA_GET_SECONDS(delta)));
  out.setMicroseconds(uint32_t(PyDateTime_DELTA_GET_MICROSECONDS(delta)));
}

// The offset and name an exact datetime.timezone was made with (its __getinitargs__, the
// type's own C method).
struct ZoneFields {
  int64_t offsetMicroseconds = 0;
  bool named = false;
  std::string name;
};

// Reads `zone`'s fields, or returns false when it is not one this side can describe (a name
// over kMaxStandardTextBytes).
bool readZoneFields(PyObject* zone, const PyDateTime_CAPI* dt, ZoneFields& out) {
  py::object args = steal(PyObject_CallMethod(zone, "__getinitargs__", nullptr));
  if (!PyTuple_CheckExact(args.ptr()) || PyTuple_GET_SIZE(args.ptr()) < 1) return false;
  PyObject* offset = PyTuple_GET_ITEM(args.ptr(), 0);
  if (Py_TYPE(offset) != dt->DeltaType) return false;
  out.named = PyTuple_GET_SIZE(args.ptr()) > 1;
  if (out.named && !utf8Of(PyTuple_GET_ITEM(args.ptr(), 1), out.name)) return false;
  out.offsetMicroseconds = int64_t(PyDateTime_DELTA_GET_DAYS(offset)) * kMicrosecondsPerDay +
                           int64_t(PyDateTime_DELTA_GET_SECONDS(offset)) * 1000000 +
                           PyDateTime_DELTA_GET_MICROSECONDS(offset);
  return true;
}

void writeZone(const ZoneFields& zone, wire::TimeZone::Builder out) {
  out.setOffsetMicroseconds(zone.offsetMicroseconds);
  if (zone.named) {
    out.getName().setNamed(bytesOf(zone.name));
  } else {
    out.getName().setUnnamed();
  }
}

py::object readTimeZone(wire::TimeZone::Reader in, const PyDateTime_CAPI* dt) {
  int64_t offset = in.getOffsetMicroseconds();
  KJ_REQUIRE(offset > -kMicrosecondsPerDay && offset < kMicrosecondsPerDay,
             "peer sent a timezone offset of a day or more", offset);
  // Floor division, as timedelta normalizes: microseconds and seconds are never negative.
  int64_t days = offset < 0 ? -1 : 0;
  int64_t rest = offset - days * kMicrosecondsPerDay;
  py::object delta = rebuilt(dt->Delta_FromDelta(int(days), int(rest / 1000000),
                                                  int(rest % 1000000), 1, dt->DeltaType),
                             "timezone offset");
  if (in.getName().isUnnamed()) {
    // timezone(timedelta(0)) is the receiver's own timezone.utc.
    return rebuilt(dt->TimeZone_FromTimeZone(delta.ptr(), nullptr), "timezone");
  }
  py::object name = strOf(in.getName().getNamed());
  return rebuilt(dt->TimeZone_FromTimeZone(delta.ptr(), name.ptr()), "timezone");
}

// The tzinfo of a time or datetime: false when it is neither None nor an exact timezone (a
// zoneinfo, a tzinfo of the program's: the whole value then crosses by reference). Read before
// anything is written, so that a `false` leaves the value unwritten.
bool readTzinfo(PyObject* tzinfo, const PyDateTime_CAPI* dt, ZoneFields& out) {
  if (tzinfo == Py_None) return true;
  if (Py_TYPE(tzinfo) != Py_TYPE(dt->TimeZone_UTC)) return false;
  return readZoneFields(tzinfo, dt, out);
}

void setTzinfo(PyObject* tzinfo, const ZoneFields& zone, wire::Time::Builder out) {
  if (tzinfo == Py_None) {
    out.getTzinfo().setNaive();
  } else {
    writeZone(zone, out.getTzinfo().initTimezone());
  }
}

py::object readTzinfo(wire::Time::Reader in, const PyDateTime_CAPI* dt) {
  auto tzinfo = in.getTzinfo();
  if (tzinfo.isNaive()) return py::none();
  return readTimeZone(tzinfo.getTimezone(), dt);
}

// A Decimal's fields, as str() writes them (the General Decimal Arithmetic to-scientific-string):
// [-] then Infinity, [s]NaN[payload], or digits[.digits][E(+|-)digits]. False for anything else
// or past the bounds of limits.h.
struct DecimalFields {
  bool negative = false;
  std::string_view digits;  // into the text; leading zeros of a coefficient dropped
  std::string joined;       // the coefficient, when it had a point
  int64_t exponent = 0;
  wire::DecimalNumber::Kind kind = wire::DecimalNumber::Kind::FINITE;
};

bool allDigits(std::string_view s) {
  for (char c : s) {
    if (c < '0' || c > '9') return false;
  }
  return true;
}

bool parseDecimal(std::string_view text, DecimalFields& out) {
  if (text.size() > kMaxDecimalDigits + 32) return false;
  if (!text.empty() && text[0] == '-') {
    out.negative = true;
    text.remove_prefix(1);
  }
  if (text == "Infinity") {
    out.kind = wire::DecimalNumber::Kind::INFINITE;
    return true;
  }
  for (auto [prefix, kind] : {std::pair<std::string_view, wire::DecimalNumber::Kind>{
                                  "sNaN", wire::DecimalNumber::Kind::SIGNALING_NAN},
                              {"NaN", wire::DecimalNumber::Kind::QUIET_NAN}}) {
    if (text.substr(0, prefix.size()) == prefix) {
      out.kind = kind;
      out.digits = text.substr(prefix.size());
      return allDigits(out.digits) && out.digits.size() <= kMaxDecimalDigits;
    }
  }
  size_t end = text.find_first_of("Ee");  // 'e' when the context's `capitals` is 0
  std::string_view mantissa = text.substr(0, end);
  int64_t exponent = 0;
  if (end != std::string_view::npos) {
    std::string_view power = text.substr(end + 1);
    bool negativePower = !power.empty() && power[0] == '-';
    if (power.empty() || (power[0] != '+' && power[0] != '-')) return false;
    power.remove_prefix(1);
    if (power.empty() || power.size() > 18 || !allDigits(power)) return false;
    for (char c : power) exponent = exponent * 10 + (c - '0');
    if (negativePower) exponent = -exponent;
  }
  size_t point = mantissa.find('.');
  std::string_view whole = mantissa.substr(0, point);
  std::string_view fraction =
      point == std::string_view::npos ? std::string_view() : mantissa.substr(point + 1);
  if (whole.empty() || !allDigits(whole) || !allDigits(fraction)) return false;
  exponent -= int64_t(fraction.size());
  if (exponent > kMaxDecimalExponent || exponent < -kMaxDecimalExponent) return false;
  std::string_view coefficient = whole;
  if (!fraction.empty()) {
    out.joined.reserve(whole.size() + fraction.size());
    out.joined.append(whole).append(fraction);
    coefficient = out.joined;
  }
  size_t zeros = 0;
  while (zeros + 1 < coefficient.size() && coefficient[zeros] == '0') ++zeros;
  out.digits = coefficient.substr(zeros);
  out.exponent = exponent;
  return out.digits.size() <= kMaxDecimalDigits;
}

}  // namespace

bool StandardValues::isDtypeString(std::string_view text, bool scalar) {
  if (text.size() < 3 || text.size() > 32) return false;
  char order = text[0];
  if (order != '<' && order != '>' && order != '|' && order != '=') return false;
  std::string_view rest = text.substr(1);
  auto oneOf = [&](std::initializer_list<std::string_view> options) {
    for (auto option : options) {
      if (rest == option) return true;
    }
    return false;
  };
  if (oneOf({"b1", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8", "f16",
             "c8", "c16", "c32"})) {
    return true;
  }
  auto digits = [](std::string_view s, size_t most) {
    if (s.empty() || s.size() > most) return false;
    for (char c : s) {
      if (c < '0' || c > '9') return false;
    }
    return true;
  };
  if (rest.substr(0, 2) == "M8" || rest.substr(0, 2) == "m8") {
    std::string_view unit = rest.substr(2);
    if (unit.empty()) return true;  // generic
    if (unit.front() != '[' || unit.back() != ']') return false;
    unit = unit.substr(1, unit.size() - 2);
    size_t count = 0;
    while (count < unit.size() && unit[count] >= '0' && unit[count] <= '9') ++count;
    if (count > 9) return false;
    unit = unit.substr(count);
    for (std::string_view known : {"Y", "M", "W", "D", "h", "m", "s", "ms", "us", "ns", "ps",
                                   "fs", "as"}) {
      if (unit == known) return true;
    }
    return false;
  }
  if (!scalar && (rest[0] == 'S' || rest[0] == 'U')) return digits(rest.substr(1), 9);
  return false;
}

void StandardValues::refresh() {
  Classes& c = classes_;
  if (!c.datetimeFound) {
    PyObject* dict = moduleDict("datetime");
    PyObject* capsule = dict != nullptr ? PyDict_GetItemString(dict, "datetime_CAPI") : nullptr;
    if (capsule != nullptr && PyCapsule_IsValid(capsule, PyDateTime_CAPSULE_NAME)) {
      PyDateTimeAPI = static_cast<PyDateTime_CAPI*>(
          PyCapsule_GetPointer(capsule, PyDateTime_CAPSULE_NAME));
      c.datetimeApi = PyDateTimeAPI;
      c.datetimeFound = true;
    }
  }
  if (!c.decimal) c.decimal = classIn(moduleDict("decimal"), "Decimal");
  if (!c.fraction) c.fraction = classIn(moduleDict("fractions"), "Fraction");
  if (!c.uuid) {
    PyObject* dict = moduleDict("uuid");
    py::object safe = classIn(dict, "SafeUUID");
    if (safe) {
      c.safeUuid = safe;
      c.uuid = classIn(dict, "UUID");
    }
  }
  if (!c.purePosixPath) {
    PyObject* dict = moduleDict("pathlib");
    py::object pure = classIn(dict, "PurePosixPath");
    if (pure) {
      c.pureWindowsPath = classIn(dict, "PureWindowsPath");
      c.posixPath = classIn(dict, "PosixPath");
      c.purePosixPath = pure;
    }
  }
  if (!c.enumType) c.enumType = classIn(moduleDict("enum"), "EnumType");
  if (!c.numpyScalar) {
    PyObject* numpy = moduleDict("numpy");
    PyObject* multiarray = moduleDict("numpy._core.multiarray");
    if (multiarray == nullptr) multiarray = moduleDict("numpy.core.multiarray");
    PyObject* scalar = multiarray != nullptr ? PyDict_GetItemString(multiarray, "scalar") : nullptr;
    py::object generic = classIn(numpy, "generic");
    py::object dtype = classIn(numpy, "dtype");
    if (scalar != nullptr && PyCFunction_Check(scalar) && generic && dtype) {
      c.numpyGeneric = generic;
      c.numpyDtype = dtype;
      c.numpyScalar = borrow(scalar);
    }
  }
}

const void* StandardValues::datetimeApi() {
  if (!classes_.datetimeFound) refresh();
  KJ_REQUIRE(classes_.datetimeFound,
             "peer sent a datetime value, and this process has no datetime");
  return classes_.datetimeApi;
}

bool StandardValues::encode(py::handle object, wire::Value::Builder out) {
  refresh();
  PyObject* o = object.ptr();
  PyTypeObject* type = Py_TYPE(o);
  PyObject* t = reinterpret_cast<PyObject*>(type);
  const Classes& c = classes_;
  if (c.datetimeFound && encodeDatetime(o, type, out)) return true;
  if (t == c.decimal.ptr() && t != nullptr) {
    // str() of a Decimal is exact (and eight times cheaper than as_tuple()): read its fields.
    py::object text = steal(PyObject_Str(o));
    Py_ssize_t size = 0;
    const char* utf8 = PyUnicode_AsUTF8AndSize(text.ptr(), &size);
    if (utf8 == nullptr) throw py::error_already_set();
    DecimalFields fields;
    if (!parseDecimal(std::string_view(utf8, size_t(size)), fields)) return false;
    auto decimal = out.initStandard().initDecimal();
    decimal.setNegative(fields.negative);
    decimal.setDigits(capnp::Text::Reader(fields.digits.data(), fields.digits.size()));
    decimal.setExponent(fields.exponent);
    decimal.setKind(fields.kind);
    return true;
  }
  if (t == c.fraction.ptr() && t != nullptr) {
    py::object numerator = steal(PyObject_GetAttrString(o, "_numerator"));
    py::object denominator = steal(PyObject_GetAttrString(o, "_denominator"));
    std::string n, d;
    if (!PyLong_CheckExact(numerator.ptr()) || !PyLong_CheckExact(denominator.ptr()) ||
        !intBytes(numerator.ptr(), n) || !intBytes(denominator.ptr(), d)) {
      return false;
    }
    auto fraction = out.initStandard().initFraction();
    fraction.setNumerator(bytesOf(n));
    fraction.setDenominator(bytesOf(d));
    return true;
  }
  if (t == c.uuid.ptr() && t != nullptr) {
    py::object value = steal(PyObject_GetAttrString(o, "int"));
    py::object safety = steal(PyObject_GetAttrString(o, "is_safe"));
    if (!PyLong_CheckExact(value.ptr())) return false;
    PyObject* members = PyDict_GetItemString(
        reinterpret_cast<PyTypeObject*>(c.safeUuid.ptr())->tp_dict, "_member_map_");
    if (members == nullptr || !PyDict_Check(members)) return false;
    wire::Uuid::Safety safe;
    if (safety.ptr() == PyDict_GetItemString(members, "safe")) {
      safe = wire::Uuid::Safety::SAFE;
    } else if (safety.ptr() == PyDict_GetItemString(members, "unsafe")) {
      safe = wire::Uuid::Safety::UNSAFE;
    } else if (safety.ptr() == PyDict_GetItemString(members, "unknown")) {
      safe = wire::Uuid::Safety::UNKNOWN;
    } else {
      return false;
    }
    // Big-endian, as UUID.bytes: the high and the low 64 bits (int is in [0, 2^128)).
    py::object shift = steal(PyLong_FromLong(64));
    py::object high = steal(PyNumber_Rshift(value.ptr(), shift.ptr()));
    unsigned long long parts[2] = {PyLong_AsUnsignedLongLong(high.ptr()),
                                   PyLong_AsUnsignedLongLongMask(value.ptr())};
    if (PyErr_Occurred()) {
      PyErr_Clear();
      return false;  // not below 2^128
    }
    kj::byte bytes[16];
    for (int i = 0; i < 16; ++i) bytes[i] = kj::byte(parts[i / 8] >> (8 * (7 - i % 8)));
    auto uuid = out.initStandard().initUuid();
    uuid.setBytes(kj::arrayPtr(bytes, 16));
    uuid.setIsSafe(safe);
    return true;
  }
  if (t != nullptr && (t == c.purePosixPath.ptr() || t == c.pureWindowsPath.ptr() ||
                       t == c.posixPath.ptr())) {
    py::object text = steal(PyObject_Str(o));
    std::string utf8;
    if (!utf8Of(text.ptr(), utf8)) return false;
    auto path = out.initStandard().initPath();
    path.setFlavour(t == c.purePosixPath.ptr()     ? wire::PathValue::Flavour::PURE_POSIX
                    : t == c.pureWindowsPath.ptr() ? wire::PathValue::Flavour::PURE_WINDOWS
                                                   : wire::PathValue::Flavour::POSIX);
    path.setText(bytesOf(utf8));
    return true;
  }
  if (c.enumType && encodeEnumMember(o, type, out)) return true;
  if (c.numpyScalar && encodeNumpy(o, type, out)) return true;
  return false;
}

bool StandardValues::encodeDatetime(PyObject* o, PyTypeObject* type, wire::Value::Builder out) {
  const PyDateTime_CAPI* dt = api(classes_.datetimeApi);
  if (type == dt->DateTimeType) {
    PyObject* tzinfo = PyDateTime_DATE_GET_TZINFO(o);
    ZoneFields zone;
    if (!readTzinfo(tzinfo, dt, zone)) return false;
    auto value = out.initStandard().initDatetime();
    auto date = value.initDate();
    date.setYear(uint16_t(PyDateTime_GET_YEAR(o)));
    date.setMonth(uint8_t(PyDateTime_GET_MONTH(o)));
    date.setDay(uint8_t(PyDateTime_GET_DAY(o)));
    auto time = value.initTime();
    time.setHour(uint8_t(PyDateTime_DATE_GET_HOUR(o)));
    time.setMinute(uint8_t(PyDateTime_DATE_GET_MINUTE(o)));
    time.setSecond(uint8_t(PyDateTime_DATE_GET_SECOND(o)));
    time.setMicrosecond(uint32_t(PyDateTime_DATE_GET_MICROSECOND(o)));
    time.setFold(PyDateTime_DATE_GET_FOLD(o) != 0);
    setTzinfo(tzinfo, zone, time);
    return true;
  }
  if (type == dt->DateType) {
    auto date = out.initStandard().initDate();
    date.setYear(uint16_t(PyDateTime_GET_YEAR(o)));
    date.setMonth(uint8_t(PyDateTime_GET_MONTH(o)));
    date.setDay(uint8_t(PyDateTime_GET_DAY(o)));
    return true;
  }
  if (type == dt->TimeType) {
    PyObject* tzinfo = PyDateTime_TIME_GET_TZINFO(o);
    ZoneFields zone;
    if (!readTzinfo(tzinfo, dt, zone)) return false;
    auto time = out.initStandard().initTime();
    time.setHour(uint8_t(PyDateTime_TIME_GET_HOUR(o)));
    time.setMinute(uint8_t(PyDateTime_TIME_GET_MINUTE(o)));
    time.setSecond(uint8_t(PyDateTime_TIME_GET_SECOND(o)));
    time.setMicrosecond(uint32_t(PyDateTime_TIME_GET_MICROSECOND(o)));
    time.setFold(PyDateTime_TIME_GET_FOLD(o) != 0);
    setTzinfo(tzinfo, zone, time);
    return true;
  }
  if (type == dt->DeltaType) {
    writeDelta(o, out.initStandard().initTimedelta());
    return true;
  }
  if (type == Py_TYPE(dt->TimeZone_UTC)) {
    ZoneFields zone;
    if (!readZoneFields(o, dt, zone)) return false;
    writeZone(zone, out.initStandard().initTimezone());
    return true;
  }
  return false;
}

bool StandardValues::encodeEnumMember(PyObject* o, PyTypeObject* type, wire::Value::Builder out) {
  if (!PyType_IsSubtype(Py_TYPE(type), reinterpret_cast<PyTypeObject*>(classes_.enumType.ptr())) ||
      !(type->tp_flags & Py_TPFLAGS_HEAPTYPE) || type->tp_dict == nullptr) {
    return false;
  }
  // A canonical member: the one its class's member map lists under its name.
  PyObject* members = PyDict_GetItemString(type->tp_dict, "_member_map_");  // borrowed
  if (members == nullptr || !PyDict_Check(members)) return false;
  PyObject* instanceDict = PyObject_GenericGetDict(o, nullptr);
  if (instanceDict == nullptr) {
    PyErr_Clear();
    return false;
  }
  py::object ownDict = steal(instanceDict);
  PyObject* name = PyDict_GetItemString(instanceDict, "_name_");  // borrowed
  if (name == nullptr || !PyUnicode_CheckExact(name) || PyDict_GetItem(members, name) != o) {
    return false;
  }
  PyObject* module = PyDict_GetItemString(type->tp_dict, "__module__");
  PyObject* qualname = reinterpret_cast<PyHeapTypeObject*>(type)->ht_qualname;
  std::string moduleText, qualnameText, nameText;
  if (module == nullptr || !utf8Of(module, moduleText) || !utf8Of(qualname, qualnameText) ||
      !utf8Of(name, nameText) || qualnameText.find("<locals>") != std::string::npos) {
    return false;  // a class no other process can look up
  }
  auto member = out.initStandard().initEnumMember();
  member.setModule(moduleText);
  member.setQualname(qualnameText);
  member.setName(nameText);
  peer_.exportRef(o, member.initOriginal().initRef());
  return true;
}

bool StandardValues::encodeNumpy(PyObject* o, PyTypeObject* type, wire::Value::Builder out) {
  const Classes& c = classes_;
  if (PyType_IsSubtype(type, reinterpret_cast<PyTypeObject*>(c.numpyGeneric.ptr()))) {
    // (scalar, (dtype, bytes)): how numpy itself pickles a scalar.
    py::object reduced = steal(PyObject_CallMethod(o, "__reduce__", nullptr));
    if (!PyTuple_Check(reduced.ptr()) || PyTuple_GET_SIZE(reduced.ptr()) != 2) return false;
    PyObject* args = PyTuple_GET_ITEM(reduced.ptr(), 1);
    if (!PyTuple_Check(args) || PyTuple_GET_SIZE(args) != 2) return false;
    PyObject* dtype = PyTuple_GET_ITEM(args, 0);
    PyObject* data = PyTuple_GET_ITEM(args, 1);
    if (!PyType_IsSubtype(Py_TYPE(dtype), reinterpret_cast<PyTypeObject*>(c.numpyDtype.ptr())) ||
        !PyBytes_CheckExact(data) || PyBytes_GET_SIZE(data) > 32) {
      return false;
    }
    py::object scalarType = steal(PyObject_GetAttrString(dtype, "type"));
    if (scalarType.ptr() != reinterpret_cast<PyObject*>(type)) return false;  // a subclass
    py::object text = steal(PyObject_GetAttrString(dtype, "str"));
    std::string dtypeText;
    if (!utf8Of(text.ptr(), dtypeText) || !isDtypeString(dtypeText, true)) return false;
    auto scalar = out.initStandard().initNumpyScalar();
    scalar.setDtype(dtypeText);
    scalar.setData(kj::arrayPtr(reinterpret_cast<const kj::byte*>(PyBytes_AS_STRING(data)),
                                size_t(PyBytes_GET_SIZE(data))));
    peer_.exportRef(o, scalar.initOriginal().initRef());
    return true;
  }
  if (PyType_IsSubtype(type, reinterpret_cast<PyTypeObject*>(c.numpyDtype.ptr()))) {
    py::object fields = steal(PyObject_GetAttrString(o, "fields"));
    py::object metadata = steal(PyObject_GetAttrString(o, "metadata"));
    if (!fields.is_none() || !metadata.is_none()) return false;
    py::object text = steal(PyObject_GetAttrString(o, "str"));
    std::string dtypeText;
    if (!utf8Of(text.ptr(), dtypeText) || !isDtypeString(dtypeText, false)) return false;
    auto dtype = out.initStandard().initNumpyDtype();
    dtype.setDtype(dtypeText);
    peer_.exportRef(o, dtype.initOriginal().initRef());
    return true;
  }
  return false;
}

py::object StandardValues::original(wire::Value::Reader in, bool use) {
  py::object object;
  switch (in.which()) {
    case wire::Value::REF:
      if (!use) {
        peer_.discardRef(in.getRef());
        return py::object();
      }
      object = peer_.importRef(in.getRef());
      break;
    case wire::Value::BACK:
      object = peer_.resolveBack(in.getBack(), 0);
      break;
    default:
      KJ_FAIL_REQUIRE("peer sent a standard value whose original is not a ref or back",
                      uint(in.which()));
  }
  return use ? object : py::object();
}

py::object StandardValues::decode(wire::StandardValue::Reader in) {
  switch (in.which()) {
    case wire::StandardValue::DATE: {
      auto date = in.getDate();
      checkDate(date);
      const PyDateTime_CAPI* dt = api(datetimeApi());
      return rebuilt(dt->Date_FromDate(date.getYear(), date.getMonth(), date.getDay(),
                                       dt->DateType),
                     "date");
    }
    case wire::StandardValue::TIME: {
      auto time = in.getTime();
      checkTime(time);
      const PyDateTime_CAPI* dt = api(datetimeApi());
      py::object tzinfo = readTzinfo(time, dt);
      return rebuilt(dt->Time_FromTimeAndFold(time.getHour(), time.getMinute(), time.getSecond(),
                                              int(time.getMicrosecond()), tzinfo.ptr(),
                                              time.getFold() ? 1 : 0, dt->TimeType),
                     "time");
    }
    case wire::StandardValue::DATETIME: {
      auto value = in.getDatetime();
      auto date = value.getDate();
      auto time = value.getTime();
      checkDate(date);
      checkTime(time);
      const PyDateTime_CAPI* dt = api(datetimeApi());
      py::object tzinfo = readTzinfo(time, dt);
      return rebuilt(dt->DateTime_FromDateAndTimeAndFold(
                         date.getYear(), date.getMonth(), date.getDay(), time.getHour(),
                         time.getMinute(), time.getSecond(), int(time.getMicrosecond()),
                         tzinfo.ptr(), time.getFold() ? 1 : 0, dt->DateTimeType),
                     "datetime");
    }
    case wire::StandardValue::TIMEDELTA: {
      auto delta = in.getTimedelta();
      KJ_REQUIRE(delta.getDays() >= -999999999 && delta.getDays() <= 999999999 &&
                     delta.getSeconds() < 86400 && delta.getMicroseconds() < 1000000,
                 "peer sent a bad timedelta", delta.getDays(), delta.getSeconds(),
                 delta.getMicroseconds());
      const PyDateTime_CAPI* dt = api(datetimeApi());
      return rebuilt(dt->Delta_FromDelta(delta.getDays(), int(delta.getSeconds()),
                                         int(delta.getMicroseconds()), 0, dt->DeltaType),
                     "timedelta");
    }
    case wire::StandardValue::TIMEZONE:
      return readTimeZone(in.getTimezone(), api(datetimeApi()));
    case wire::StandardValue::DECIMAL: {
      auto decimal = in.getDecimal();
      std::string_view digits = textOf(decimal.getDigits());
      KJ_REQUIRE(digits.size() <= kMaxDecimalDigits, "peer sent a Decimal over the size limit",
                 digits.size());
      for (char digit : digits) KJ_REQUIRE(digit >= '0' && digit <= '9', "peer sent a bad Decimal");
      int64_t exponent = decimal.getExponent();
      std::string text = decimal.getNegative() ? "-" : "";
      switch (decimal.getKind()) {
        case wire::DecimalNumber::Kind::FINITE:
          KJ_REQUIRE(!digits.empty() && exponent >= -kMaxDecimalExponent &&
                         exponent <= kMaxDecimalExponent,
                     "peer sent a bad Decimal", exponent);
          text.append(digits).append("E").append(std::to_string(exponent));
          break;
        case wire::DecimalNumber::Kind::INFINITE:
          KJ_REQUIRE(digits.empty(), "peer sent an infinite Decimal with digits");
          text.append("Infinity");
          break;
        case wire::DecimalNumber::Kind::QUIET_NAN:
          text.append("NaN").append(digits);
          break;
        case wire::DecimalNumber::Kind::SIGNALING_NAN:
          text.append("sNaN").append(digits);
          break;
        default:
          KJ_FAIL_REQUIRE("peer sent a Decimal of an unknown kind", uint(decimal.getKind()));
      }
      refresh();
      KJ_REQUIRE(bool(classes_.decimal), "peer sent a Decimal, and this process has no decimal");
      py::str argument(text);
      return rebuilt(PyObject_CallOneArg(classes_.decimal.ptr(), argument.ptr()), "Decimal");
    }
    case wire::StandardValue::FRACTION: {
      auto fraction = in.getFraction();
      py::object numerator = intOf(fraction.getNumerator());
      py::object denominator = intOf(fraction.getDenominator());
      KJ_REQUIRE(PyObject_RichCompareBool(denominator.ptr(), py::int_(0).ptr(), Py_GT) == 1,
                 "peer sent a Fraction whose denominator is not positive");
      refresh();
      KJ_REQUIRE(bool(classes_.fraction),
                 "peer sent a Fraction, and this process has no fractions");
      return rebuilt(PyObject_CallFunctionObjArgs(classes_.fraction.ptr(), numerator.ptr(),
                                                  denominator.ptr(), nullptr),
                     "Fraction");
    }
    case wire::StandardValue::UUID: {
      auto uuid = in.getUuid();
      KJ_REQUIRE(uuid.getBytes().size() == 16, "peer sent a UUID of a bad size",
                 uuid.getBytes().size());
      refresh();
      KJ_REQUIRE(bool(classes_.uuid), "peer sent a UUID, and this process has no uuid");
      const char* safety;
      switch (uuid.getIsSafe()) {
        case wire::Uuid::Safety::UNKNOWN: safety = "unknown"; break;
        case wire::Uuid::Safety::SAFE: safety = "safe"; break;
        case wire::Uuid::Safety::UNSAFE: safety = "unsafe"; break;
        default: KJ_FAIL_REQUIRE("peer sent a UUID of an unknown safety", uint(uuid.getIsSafe()));
      }
      PyObject* members = PyDict_GetItemString(
          reinterpret_cast<PyTypeObject*>(classes_.safeUuid.ptr())->tp_dict, "_member_map_");
      PyObject* member = members != nullptr && PyDict_Check(members)
                             ? PyDict_GetItemString(members, safety) : nullptr;
      KJ_REQUIRE(member != nullptr, "this process's uuid.SafeUUID has no such member", safety);
      // Made as unpickling makes one (UUID.__setstate__): object.__new__, then its two slots set
      // past UUID.__setattr__ (which refuses), so no Python code runs.
      auto data = uuid.getBytes();
      unsigned long long parts[2] = {0, 0};
      for (int i = 0; i < 16; ++i) parts[i / 8] = parts[i / 8] << 8 | data[unsigned(i)];
      py::object high = steal(PyLong_FromUnsignedLongLong(parts[0]));
      py::object low = steal(PyLong_FromUnsignedLongLong(parts[1]));
      py::object shift = steal(PyLong_FromLong(64));
      py::object shifted = steal(PyNumber_Lshift(high.ptr(), shift.ptr()));
      py::object value = steal(PyNumber_Or(shifted.ptr(), low.ptr()));
      PyTypeObject* type = reinterpret_cast<PyTypeObject*>(classes_.uuid.ptr());
      py::tuple none;
      py::object made = rebuilt(type->tp_new(type, none.ptr(), nullptr), "UUID");
      py::str intName("int"), safeName("is_safe");
      if (PyObject_GenericSetAttr(made.ptr(), intName.ptr(), value.ptr()) != 0 ||
          PyObject_GenericSetAttr(made.ptr(), safeName.ptr(), member) != 0) {
        rebuilt(nullptr, "UUID");
      }
      return made;
    }
    case wire::StandardValue::PATH: {
      auto path = in.getPath();
      py::object text = strOf(path.getText());
      refresh();
      KJ_REQUIRE(bool(classes_.purePosixPath), "peer sent a path, and this process has no pathlib");
      PyObject* cls;
      switch (path.getFlavour()) {
        case wire::PathValue::Flavour::PURE_POSIX: cls = classes_.purePosixPath.ptr(); break;
        case wire::PathValue::Flavour::PURE_WINDOWS: cls = classes_.pureWindowsPath.ptr(); break;
        case wire::PathValue::Flavour::POSIX: cls = classes_.posixPath.ptr(); break;
        default: KJ_FAIL_REQUIRE("peer sent a path of an unknown flavour", uint(path.getFlavour()));
      }
      KJ_REQUIRE(cls != nullptr, "this process's pathlib lacks the path's class");
      return rebuilt(PyObject_CallOneArg(cls, text.ptr()), "path");
    }
    case wire::StandardValue::ENUM_MEMBER:
      return decodeEnumMember(in.getEnumMember());
    case wire::StandardValue::NUMPY_SCALAR:
      return decodeNumpyScalar(in.getNumpyScalar());
    case wire::StandardValue::NUMPY_DTYPE:
      return decodeNumpyDtype(in.getNumpyDtype());
  }
  KJ_FAIL_REQUIRE("peer sent a standard value of an unknown kind", uint(in.which()));
}

py::object StandardValues::decodeEnumMember(wire::EnumMember::Reader in) {
  refresh();
  // Look-ups in dicts only: sys.modules, the module's dict, each class's own dict, the member
  // map. A name that is not UTF-8, or not there, means "not found".
  auto lookup = [&]() -> PyObject* {
    if (!classes_.enumType) return nullptr;
    auto text = [](capnp::Text::Reader t) {
      PyObject* made = PyUnicode_DecodeUTF8(t.cStr(), Py_ssize_t(t.size()), "strict");
      if (made == nullptr) PyErr_Clear();
      return py::reinterpret_steal<py::object>(made);
    };
    py::object module = text(in.getModule());
    py::object name = text(in.getName());
    std::string_view qualname = textOf(in.getQualname());
    if (!module || !name) return nullptr;
    PyObject* dict = moduleDict(module.ptr(), false);
    PyObject* found = nullptr;
    while (dict != nullptr) {
      size_t dot = qualname.find('.');
      std::string_view part = qualname.substr(0, dot);
      py::object key = py::reinterpret_steal<py::object>(
          PyUnicode_DecodeUTF8(part.data(), Py_ssize_t(part.size()), "strict"));
      if (!key) {
        PyErr_Clear();
        return nullptr;
      }
      found = PyDict_GetItemWithError(dict, key.ptr());
      if (found == nullptr) {
        PyErr_Clear();
        return nullptr;
      }
      if (!PyType_Check(found)) return nullptr;
      if (dot == std::string_view::npos) break;
      qualname = qualname.substr(dot + 1);
      dict = reinterpret_cast<PyTypeObject*>(found)->tp_dict;
    }
    PyTypeObject* enumType = reinterpret_cast<PyTypeObject*>(classes_.enumType.ptr());
    if (found == nullptr || !PyType_IsSubtype(Py_TYPE(found), enumType)) {
      return nullptr;
    }
    PyObject* members =
        PyDict_GetItemString(reinterpret_cast<PyTypeObject*>(found)->tp_dict, "_member_map_");
    if (members == nullptr || !PyDict_CheckExact(members)) return nullptr;
    PyObject* member = PyDict_GetItemWithError(members, name.ptr());
    if (member == nullptr) {
      PyErr_Clear();
      return nullptr;
    }
    return reinterpret_cast<PyObject*>(Py_TYPE(member)) == found ? member : nullptr;
  };
  PyObject* member = lookup();
  if (member == nullptr) return original(in.getOriginal(), true);
  py::object local = borrow(member);
  original(in.getOriginal(), false);
  return local;
}

py::object StandardValues::dtypeFor(std::string_view text) {
  std::string key(text);
  auto found = dtypes_.find(key);
  if (found != dtypes_.end()) return found->second;
  py::str argument(key);
  py::object dtype = rebuilt(PyObject_CallOneArg(classes_.numpyDtype.ptr(), argument.ptr()),
                             "numpy dtype");
  if (dtypes_.size() < 64) dtypes_.emplace(key, dtype);
  return dtype;
}

py::object StandardValues::decodeNumpyScalar(wire::NumpyScalar::Reader in) {
  std::string_view text = textOf(in.getDtype());
  auto data = in.getData();
  KJ_REQUIRE(isDtypeString(text, true), "peer sent a numpy scalar of a dtype outside the grammar");
  KJ_REQUIRE(data.size() <= 32, "peer sent a numpy scalar over the size limit", data.size());
  refresh();
  if (!classes_.numpyScalar) return original(in.getOriginal(), true);
  py::object dtype = dtypeFor(text);
  size_t itemsize = py::object(dtype.attr("itemsize")).cast<size_t>();
  KJ_REQUIRE(itemsize == data.size(), "peer sent a numpy scalar whose bytes do not fit its dtype",
             std::string(text), data.size());
  if (text.substr(1) == "b1") {
    KJ_REQUIRE(data[0] <= 1, "peer sent a numpy bool that is not 0 or 1");
  }
  py::bytes bytes(reinterpret_cast<const char*>(data.begin()), data.size());
  py::object scalar = rebuilt(PyObject_CallFunctionObjArgs(classes_.numpyScalar.ptr(), dtype.ptr(),
                                                           bytes.ptr(), nullptr),
                              "numpy scalar");
  original(in.getOriginal(), false);
  return scalar;
}

py::object StandardValues::decodeNumpyDtype(wire::NumpyDtype::Reader in) {
  std::string_view text = textOf(in.getDtype());
  KJ_REQUIRE(isDtypeString(text, false), "peer sent a numpy dtype outside the grammar");
  refresh();
  if (!classes_.numpyScalar) return original(in.getOriginal(), true);
  py::object dtype = dtypeFor(text);
  original(in.getOriginal(), false);
  return dtype;
}

}  // namespace pi
