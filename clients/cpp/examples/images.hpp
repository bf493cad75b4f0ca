// Image files for the example and the tests: JPEG bytes as they are, binary PGM/PPM decoded.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "jetsplit/client.hpp"

namespace jetsplit_example {

std::vector<std::uint8_t> read_file(const std::string& path);

bool is_jpeg(const std::vector<std::uint8_t>& bytes);

/// A binary PGM (P5) as [H, W] or PPM (P6) as [H, W, 3] uint8 tensor named
/// ``name``; a PPM's R, G, B become the frame's B, G, R (SPEC.md 12).
jetsplit::Tensor netpbm_tensor(const std::string& name, const std::vector<std::uint8_t>& bytes,
                               const std::string& path);

/// The tensor a file is sent as: a JPEG as it is (encoding jpeg), a PGM/PPM raw.
jetsplit::Tensor image_tensor(const std::string& name, const std::string& path);

}  // namespace jetsplit_example
