// Tensor payloads (SPEC.md sections 4 and 5): raw, f16, i8, jpeg, lz4 and zstd.
#include <lz4frame.h>
#include <zstd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <sstream>

#include "jetsplit/client.hpp"

namespace jetsplit {
namespace {

std::uint64_t elements_of(const std::vector<std::uint64_t>& shape) {
  std::uint64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

std::size_t itemsize(const std::string& dtype) {
  if (dtype == "bool" || dtype == "uint8" || dtype == "int8") return 1;
  if (dtype == "uint16" || dtype == "int16" || dtype == "float16") return 2;
  if (dtype == "uint32" || dtype == "int32" || dtype == "float32") return 4;
  if (dtype == "uint64" || dtype == "int64" || dtype == "float64") return 8;
  throw Error("dtype " + dtype + " is not one of SPEC.md 3.3's");
}

bool is_float(const std::string& dtype) { return dtype == "float16" || dtype == "float32" || dtype == "float64"; }

}  // namespace

std::uint16_t float_to_half(float value) {
  std::uint32_t x;
  std::memcpy(&x, &value, 4);
  const std::uint32_t sign = (x >> 16) & 0x8000u;
  const std::uint32_t exp = (x >> 23) & 0xFFu;
  std::uint32_t mant = x & 0x7FFFFFu;
  if (exp == 0xFF) return static_cast<std::uint16_t>(sign | 0x7C00u | (mant ? 0x200u : 0u));  // inf, NaN
  const int e = static_cast<int>(exp) - 127 + 15;
  if (e >= 31) return static_cast<std::uint16_t>(sign | 0x7C00u);  // overflow: infinity
  if (e <= 0) {                                                     // subnormal or zero
    if (e < -10) return static_cast<std::uint16_t>(sign);
    mant |= 0x800000u;
    const int shift = 14 - e;
    std::uint32_t half = mant >> shift;
    const std::uint32_t rest = mant & ((1u << shift) - 1);
    const std::uint32_t halfway = 1u << (shift - 1);
    if (rest > halfway || (rest == halfway && (half & 1u))) ++half;
    return static_cast<std::uint16_t>(sign | half);
  }
  std::uint32_t half = (static_cast<std::uint32_t>(e) << 10) | (mant >> 13);
  const std::uint32_t rest = mant & 0x1FFFu;
  if (rest > 0x1000u || (rest == 0x1000u && (half & 1u))) ++half;  // may carry into the exponent: fine
  return static_cast<std::uint16_t>(sign | half);
}

float half_to_float(std::uint16_t bits) {
  const std::uint32_t sign = (bits & 0x8000u) << 16;
  const std::uint32_t exp = (bits >> 10) & 0x1Fu;
  const std::uint32_t mant = bits & 0x3FFu;
  std::uint32_t x;
  if (exp == 0) {
    if (mant == 0) {
      x = sign;
    } else {
      float f = std::ldexp(static_cast<float>(mant), -24);
      std::memcpy(&x, &f, 4);
      x |= sign;
    }
  } else if (exp == 31) {
    x = sign | 0x7F800000u | (mant << 13);
  } else {
    x = sign | ((exp - 15 + 127) << 23) | (mant << 13);
  }
  float out;
  std::memcpy(&out, &x, 4);
  return out;
}

Tensor Tensor::raw(const std::string& name, const std::string& dtype, std::vector<std::uint64_t> shape,
                   const std::vector<std::uint8_t>& data) {
  if (data.size() != elements_of(shape) * itemsize(dtype))
    throw Error("tensor " + name + ": " + std::to_string(data.size()) + " bytes do not fill its shape as " + dtype);
  Tensor t;
  t.name = name;
  t.dtype = dtype;
  t.shape = std::move(shape);
  t.payload = data;
  return t;
}

Tensor Tensor::f16(const std::string& name, std::vector<std::uint64_t> shape, const std::vector<float>& values,
                   const std::string& dtype) {
  if (values.size() != elements_of(shape)) throw Error("tensor " + name + ": values do not fill its shape");
  if (!is_float(dtype)) throw Error("tensor " + name + ": f16 decodes to a float dtype, not " + dtype);
  Tensor t;
  t.name = name;
  t.dtype = dtype;
  t.shape = std::move(shape);
  t.encoding = "f16";
  t.payload.resize(values.size() * 2);
  for (std::size_t i = 0; i < values.size(); ++i) {
    const std::uint16_t h = float_to_half(values[i]);
    t.payload[2 * i] = static_cast<std::uint8_t>(h & 0xFF);  // little-endian
    t.payload[2 * i + 1] = static_cast<std::uint8_t>(h >> 8);
  }
  return t;
}

Tensor Tensor::i8(const std::string& name, std::vector<std::uint64_t> shape, const std::vector<float>& values,
                  const std::string& dtype) {
  if (values.size() != elements_of(shape)) throw Error("tensor " + name + ": values do not fill its shape");
  if (!is_float(dtype)) throw Error("tensor " + name + ": i8 decodes to a float dtype, not " + dtype);
  float amax = 0.0f;
  for (float v : values) {
    if (!std::isfinite(v)) throw Error("tensor " + name + ": i8 cannot encode NaN or infinity");
    amax = std::max(amax, std::fabs(v));
  }
  // SPEC.md 4: scale = max|x| / 127, and a positive scale even when all are 0.
  const double scale = amax > 0.0f ? static_cast<double>(amax) / 127.0 : 1.0;
  Tensor t;
  t.name = name;
  t.dtype = dtype;
  t.shape = std::move(shape);
  t.encoding = "i8";
  t.scale = scale;
  t.payload.resize(values.size());
  const float inv = static_cast<float>(scale);
  for (std::size_t i = 0; i < values.size(); ++i) {
    const float q = std::nearbyint(values[i] / inv);  // default rounding: half to even
    t.payload[i] = static_cast<std::uint8_t>(static_cast<std::int8_t>(std::clamp(q, -127.0f, 127.0f)));
  }
  return t;
}

JpegSize jpeg_size(const std::vector<std::uint8_t>& b) {
  const std::size_t n = b.size();
  if (n < 4 || b[0] != 0xFF || b[1] != 0xD8) throw Error("not a JPEG file (no SOI marker)");
  std::size_t i = 2;
  while (i + 4 <= n) {
    if (b[i] != 0xFF) throw Error("corrupt JPEG marker stream");
    const std::uint8_t marker = b[i + 1];
    if (marker == 0xFF) {
      ++i;
      continue;
    }
    if (marker == 0x01 || (marker >= 0xD0 && marker <= 0xD7)) {
      i += 2;
      continue;
    }
    if (marker == 0xD9 || marker == 0xDA) break;
    const std::size_t length = (static_cast<std::size_t>(b[i + 2]) << 8) | b[i + 3];
    const bool sof = marker >= 0xC0 && marker <= 0xCF && marker != 0xC4 && marker != 0xC8 && marker != 0xCC;
    if (sof) {
      if (i + 10 > n || length < 8) break;
      return {static_cast<std::uint32_t>((b[i + 5] << 8) | b[i + 6]),
              static_cast<std::uint32_t>((b[i + 7] << 8) | b[i + 8]), b[i + 9]};
    }
    i += 2 + length;
  }
  throw Error("JPEG has no frame header (SOF)");
}

Tensor Tensor::jpeg(const std::string& name, const std::vector<std::uint8_t>& file) {
  const JpegSize size = jpeg_size(file);
  if (size.components != 1 && size.components != 3)
    throw Error("tensor " + name + ": a JPEG with " + std::to_string(size.components) +
                " components (the protocol carries 1 or 3)");
  if (size.height == 0 || size.width == 0) throw Error("tensor " + name + ": JPEG of size 0");
  Tensor t;
  t.name = name;
  t.dtype = "uint8";
  t.shape = {size.height, size.width};
  if (size.components == 3) t.shape.push_back(3);
  t.encoding = "jpeg";
  t.payload = file;
  return t;
}

Tensor& Tensor::compress(const std::string& compression) {
  if (compression == "none") return *this;
  if (encoding == "jpeg") throw Error("tensor " + name + ": a jpeg payload must not be compressed");
  std::vector<std::uint8_t> out;
  if (compression == "lz4") {
    LZ4F_preferences_t prefs;
    std::memset(&prefs, 0, sizeof(prefs));
    prefs.frameInfo.contentSize = payload.size();  // SPEC.md 5: SHOULD store the content size
    out.resize(LZ4F_compressFrameBound(payload.size(), &prefs));
    const std::size_t got = LZ4F_compressFrame(out.data(), out.size(), payload.data(), payload.size(), &prefs);
    if (LZ4F_isError(got)) throw Error(std::string("lz4: ") + LZ4F_getErrorName(got));
    out.resize(got);
  } else if (compression == "zstd") {
    out.resize(ZSTD_compressBound(payload.size()));
    const std::size_t got = ZSTD_compress(out.data(), out.size(), payload.data(), payload.size(), 3);
    if (ZSTD_isError(got)) throw Error(std::string("zstd: ") + ZSTD_getErrorName(got));
    out.resize(got);
  } else {
    throw Error("unknown compression " + compression + " (none, lz4 or zstd)");
  }
  payload = std::move(out);
  this->compression = compression;
  return *this;
}

CurveKeys load_curve_keys(const std::string& client_secret_file, const std::string& server_public_file) {
  // ZPL certificates as `zmq.auth` writes them: `public-key = "..."` and `secret-key = "..."`.
  auto read_key = [](const std::string& path, const std::string& field) {
    std::ifstream in(path);
    if (!in) throw Error("cannot read key file " + path);
    std::string line;
    while (std::getline(in, line)) {
      const auto at = line.find(field);
      if (at == std::string::npos) continue;
      const auto open = line.find('"', at);
      const auto close = line.find('"', open + 1);
      if (open != std::string::npos && close != std::string::npos && close - open - 1 == 40)
        return line.substr(open + 1, 40);
    }
    throw Error("key file " + path + " has no " + field + " of 40 Z85 characters");
  };
  return {read_key(server_public_file, "public-key"), read_key(client_secret_file, "public-key"),
          read_key(client_secret_file, "secret-key")};
}

}  // namespace jetsplit
