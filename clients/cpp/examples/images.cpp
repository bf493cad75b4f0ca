#include "images.hpp"

#include <cctype>
#include <fstream>
#include <iterator>

namespace jetsplit_example {

std::vector<std::uint8_t> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw jetsplit::Error(path + ": cannot open");
  return std::vector<std::uint8_t>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

bool is_jpeg(const std::vector<std::uint8_t>& b) { return b.size() >= 3 && b[0] == 0xFF && b[1] == 0xD8 && b[2] == 0xFF; }

namespace {

/// The next header number of a PNM file, skipping whitespace and # comments.
std::uint64_t pnm_number(const std::vector<std::uint8_t>& b, std::size_t& i, const std::string& path) {
  while (i < b.size()) {
    if (b[i] == '#') {
      while (i < b.size() && b[i] != '\n') ++i;
    } else if (std::isspace(b[i])) {
      ++i;
    } else {
      break;
    }
  }
  if (i >= b.size() || !std::isdigit(b[i])) throw jetsplit::Error(path + ": malformed PGM/PPM header");
  std::uint64_t n = 0;
  while (i < b.size() && std::isdigit(b[i])) {
    n = n * 10 + (b[i++] - '0');
    if (n > 65535) throw jetsplit::Error(path + ": PGM/PPM header number too large");
  }
  return n;
}

}  // namespace

jetsplit::Tensor netpbm_tensor(const std::string& name, const std::vector<std::uint8_t>& b, const std::string& path) {
  if (b.size() < 2 || b[0] != 'P' || (b[1] != '5' && b[1] != '6'))
    throw jetsplit::Error(path + ": not a JPEG, binary PGM (P5) or binary PPM (P6) file");
  const bool colour = b[1] == '6';
  std::size_t i = 2;
  const std::uint64_t width = pnm_number(b, i, path);
  const std::uint64_t height = pnm_number(b, i, path);
  const std::uint64_t maxval = pnm_number(b, i, path);
  if (width == 0 || height == 0) throw jetsplit::Error(path + ": image of size 0");
  if (maxval == 0 || maxval > 255) throw jetsplit::Error(path + ": only 8-bit PGM/PPM (maxval <= 255) is supported");
  ++i;  // the single whitespace byte before the pixels
  const std::uint64_t channels = colour ? 3 : 1;
  const std::uint64_t size = width * height * channels;
  if (b.size() < i + size) throw jetsplit::Error(path + ": truncated pixel data");
  std::vector<std::uint8_t> pixels(b.begin() + static_cast<std::ptrdiff_t>(i),
                                   b.begin() + static_cast<std::ptrdiff_t>(i + size));
  if (maxval != 255)
    for (auto& p : pixels) p = static_cast<std::uint8_t>((p * 255u + maxval / 2) / maxval);
  if (!colour) return jetsplit::Tensor::raw(name, "uint8", {height, width}, pixels);
  for (std::size_t p = 0; p < pixels.size(); p += 3) std::swap(pixels[p], pixels[p + 2]);  // RGB -> BGR
  return jetsplit::Tensor::raw(name, "uint8", {height, width, 3}, pixels);
}

jetsplit::Tensor image_tensor(const std::string& name, const std::string& path) {
  const auto bytes = read_file(path);
  if (is_jpeg(bytes)) {
    try {
      return jetsplit::Tensor::jpeg(name, bytes);
    } catch (const jetsplit::Error& exc) {
      throw jetsplit::Error(path + ": " + exc.what());
    }
  }
  return netpbm_tensor(name, bytes, path);
}

}  // namespace jetsplit_example
