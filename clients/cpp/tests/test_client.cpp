// jetsplit_client_tests ENDPOINT JPEG PGM
//
// The C++ client against a live worker serving a bundle whose cloud stage takes
// frames (demo:little-big) and one whose cloud stage takes a carried tensor
// (demo:split): every encoding and compression it sends, every status it handles,
// and the codec's own arithmetic against SPEC.md's worked examples. One line per
// check ("ok" / "not ok"), exit status 1 if any failed.
#include <lz4frame.h>
#include <zstd.h>

#include <cmath>
#include <functional>
#include <iostream>
#include <msgpack.hpp>
#include <string>
#include <vector>

#include "images.hpp"
#include "jetsplit/client.hpp"

using jetsplit::Status;
using Bytes = std::vector<std::uint8_t>;

namespace {

int failures = 0;
int count = 0;

void check(const std::string& name, const std::function<void()>& body) {
  ++count;
  try {
    body();
    std::cout << "ok " << count << " - " << name << std::endl;
  } catch (const std::exception& exc) {
    ++failures;
    std::cout << "not ok " << count << " - " << name << ": " << exc.what() << std::endl;
  }
}

void require(bool condition, const std::string& what) {
  if (!condition) throw std::runtime_error(what);
}

void require_status(const jetsplit::Reply& r, Status want, std::uint64_t id) {
  require(r.status == want, "expected " + jetsplit::status_name(want) + ", got " + jetsplit::status_name(r.status) +
                                ": " + r.message);
  require(r.id == id && !r.id_unknown, "the reply carries id " + std::to_string(r.id) + ", not the request's");
}

std::vector<double> scores_of(jetsplit::Client& c, const std::string& fp, std::uint32_t stage,
                              const jetsplit::Tensor& t) {
  const auto r = c.infer(fp, stage, {t}, 5000.0, 0);
  require(r.ok(), "expected a result, got " + jetsplit::status_name(r.status) + ": " + r.message);
  require(!r.classes && r.scores.size() == 10, "top_k 0: ten scores in class order");
  return r.scores;
}

void require_close(const std::vector<double>& a, const std::vector<double>& b, double tol, const std::string& what) {
  require(a.size() == b.size(), what + ": lengths differ");
  for (std::size_t i = 0; i < a.size(); ++i)
    require(std::fabs(a[i] - b[i]) <= tol, what + ": score " + std::to_string(i) + " differs");
}

Bytes pack_map(const std::function<void(msgpack::packer<msgpack::sbuffer>&)>& body) {
  msgpack::sbuffer buf;
  msgpack::packer<msgpack::sbuffer> p(buf);
  body(p);
  return Bytes(buf.data(), buf.data() + buf.size());
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::cerr << "usage: jetsplit_client_tests ENDPOINT JPEG PGM\n";
    return 2;
  }
  const std::string endpoint = argv[1];

  // ------------------------------------------------------------ the codec, offline
  check("float16: IEEE binary16, round to nearest even", [] {
    require(jetsplit::float_to_half(1.0f) == 0x3C00, "1.0");
    require(jetsplit::float_to_half(-2.0f) == 0xC000, "-2.0");
    require(jetsplit::float_to_half(65504.0f) == 0x7BFF, "65504");
    require(jetsplit::float_to_half(1e6f) == 0x7C00, "overflow to infinity");
    require(jetsplit::float_to_half(0.1f) == 0x2E66, "0.1");
    require(jetsplit::float_to_half(6e-8f) == 0x0001, "smallest subnormal");
    require(std::fabs(jetsplit::half_to_float(0x3555) - 0.333251953f) < 1e-7f, "back to float");
  });
  check("i8: SPEC.md 11.2's worked example", [] {
    const auto t = jetsplit::Tensor::i8("act", {2, 2}, {0.5f, -1.0f, 0.25f, 0.0f});
    require(t.scale && std::fabs(*t.scale - 1.0 / 127) < 1e-15, "scale 1/127");
    require(t.payload == Bytes({0x40, 0x81, 0x20, 0x00}), "q = 64, -127, 32, 0");
    const auto zeros = jetsplit::Tensor::i8("z", {3}, {0.f, 0.f, 0.f});
    require(zeros.scale && *zeros.scale == 1.0, "all zeros still send a positive scale");
  });
  check("infer header: a map of 8 entries, kind first, version 2", [] {
    const auto frames = jetsplit::encode_infer(7, std::string(64, 'a'), 1, {jetsplit::Tensor::i8("act", {2, 2}, {0.5f, -1.0f, 0.25f, 0.0f})}, 150.0, 2);
    const Bytes start = {0x88, 0xa4, 'k', 'i', 'n', 'd', 0xa5, 'i', 'n', 'f', 'e', 'r', 0xa1, 'v', 0x02, 0xa2, 'i', 'd', 0x07};
    require(frames.size() == 2 && Bytes(frames[0].begin(), frames[0].begin() + 19) == start, "header bytes");
  });
  check("lz4 and zstd: one frame each, content size stored, decompresses back", [] {
    std::vector<std::uint8_t> data(4000);
    for (std::size_t i = 0; i < data.size(); ++i) data[i] = static_cast<std::uint8_t>(i % 7);
    auto lz = jetsplit::Tensor::raw("x", "uint8", {4000}, data);
    lz.compress("lz4");
    require(lz.payload.size() < 4000 && lz.payload[0] == 0x04 && lz.payload[1] == 0x22 && lz.payload[2] == 0x4D &&
                lz.payload[3] == 0x18, "LZ4 frame magic");
    LZ4F_dctx* dctx;
    LZ4F_createDecompressionContext(&dctx, LZ4F_VERSION);
    std::vector<std::uint8_t> out(4000);
    std::size_t out_size = out.size(), in_size = lz.payload.size();
    LZ4F_decompress(dctx, out.data(), &out_size, lz.payload.data(), &in_size, nullptr);
    LZ4F_freeDecompressionContext(dctx);
    require(out_size == 4000 && out == data, "lz4 round trip");
    auto zs = jetsplit::Tensor::raw("x", "uint8", {4000}, data);
    zs.compress("zstd");
    require(ZSTD_getFrameContentSize(zs.payload.data(), zs.payload.size()) == 4000, "zstd content size");
    std::vector<std::uint8_t> back(4000);
    require(ZSTD_decompress(back.data(), back.size(), zs.payload.data(), zs.payload.size()) == 4000 && back == data,
            "zstd round trip");
  });
  check("jpeg: shape from the SOF segment; PGM parsed", [&] {
    const auto t = jetsplit_example::image_tensor("frame", argv[2]);
    require(t.encoding == "jpeg" && t.dtype == "uint8" && t.shape.size() == 2 && t.shape[0] == 28, "28x28 gray jpeg");
    const auto p = jetsplit_example::image_tensor("frame", argv[3]);
    require(p.encoding == "raw" && p.shape == std::vector<std::uint64_t>({28, 28}) && p.payload.size() == 784, "PGM");
  });

  check("reply decoding: every status code, an unknown one reads as INTERNAL", [] {
    for (int code = 1; code <= 10; ++code) {
      const auto header = pack_map([&](auto& p) {
        p.pack_map(5);
        p.pack(std::string("kind"));
        p.pack(std::string("error"));
        p.pack(std::string("v"));
        p.pack(2);
        p.pack(std::string("id"));
        p.pack(9);
        p.pack(std::string("status"));
        p.pack(code);
        p.pack(std::string("message"));
        p.pack(std::string("m"));
      });
      const auto r = jetsplit::Client::decode_reply(header);
      require(static_cast<int>(r.status) == code && r.id == 9 && r.message == "m", "code " + std::to_string(code));
    }
    const auto future = pack_map([](auto& p) {
      p.pack_map(4);
      p.pack(std::string("kind"));
      p.pack(std::string("error"));
      p.pack(std::string("v"));
      p.pack(2);
      p.pack(std::string("id"));
      p.pack(9);
      p.pack(std::string("status"));
      p.pack(42);
    });
    require(jetsplit::Client::decode_reply(future).status == Status::INTERNAL, "code 42");
  });
  check("reply decoding: malformed replies are refused", [] {
    const auto good = pack_map([](auto& p) {
      p.pack_map(4);
      p.pack(std::string("kind"));
      p.pack(std::string("result"));
      p.pack(std::string("v"));
      p.pack(2);
      p.pack(std::string("id"));
      p.pack(3);
      p.pack(std::string("stage"));
      p.pack(1);
    });
    require(jetsplit::Client::decode_reply(good).ok(), "a minimal result");
    auto refused = [](const Bytes& header) {
      try {
        jetsplit::Client::decode_reply(header);
      } catch (const jetsplit::Error&) {
        return true;
      }
      return false;
    };
    Bytes trailing = good;
    trailing.push_back(0);
    require(refused(trailing), "trailing bytes");
    Bytes repeated = good;
    repeated[0] = 0x85;
    repeated.insert(repeated.end(), {0xa5, 's', 't', 'a', 'g', 'e', 0x02});
    require(refused(repeated), "a repeated key");
    Bytes unknown = good;
    unknown[0] = 0x85;
    unknown.insert(unknown.end(), {0xa3, 'f', 'o', 'o', 0x01});
    require(refused(unknown), "an unknown field");
    Bytes version = good;
    version[version.size() - 12] = 0x07;  // "v" 2 -> 7
    require(refused(version), "an unknown version");
  });

  // ------------------------------------------------------------ against the worker
  jetsplit::Options options;
  options.timeout_ms = 5000;
  jetsplit::Client client(endpoint, options);
  jetsplit::Description d;
  const jetsplit::BundleInfo* frames_bundle = nullptr;
  const jetsplit::BundleInfo* carry_bundle = nullptr;
  check("ping: a pong with our id, serving", [&] {
    const auto pong = client.ping();
    require(pong.state == "serving" && !pong.bundles.empty(), "state " + pong.state);
  });
  check("describe: bundles, cloud stages and their tensors", [&] {
    d = client.describe();
    require(d.limits.max_message_bytes > 0 && d.limits.max_tensors > 0, "limits");
    for (const auto& b : d.bundles)
      for (const auto& s : b.stages) {
        if (s.takes_frames_only() && !frames_bundle) frames_bundle = &b;
        if (s.where == "cloud" && s.inputs.size() == 1 && s.inputs[0].name == "carry" && !carry_bundle)
          carry_bundle = &b;
      }
    require(frames_bundle && carry_bundle, "a bundle taking frames and one taking a carried tensor");
    require(frames_bundle->labels.size() == 10, "ten labels");
  });
  if (!frames_bundle || !carry_bundle) return 1;
  const std::string fp = frames_bundle->fingerprint;
  std::uint32_t frame_stage = 0;
  for (const auto& s : frames_bundle->stages)
    if (s.takes_frames_only()) frame_stage = s.index;
  const auto pgm = jetsplit_example::image_tensor("frame", argv[3]);
  std::vector<double> raw_scores;

  check("frame raw (PGM): every class score", [&] { raw_scores = scores_of(client, fp, frame_stage, pgm); });
  for (const std::string comp : {"lz4", "zstd"}) {
    check("frame raw+" + comp + ": the same scores", [&] {
      auto t = pgm;
      t.compress(comp);
      require_close(scores_of(client, fp, frame_stage, t), raw_scores, 1e-9, comp);
    });
  }
  check("frame jpeg (the file as it is): close to raw", [&] {
    const auto t = jetsplit_example::image_tensor("frame", argv[2]);
    require_close(scores_of(client, fp, frame_stage, t), raw_scores, 0.5, "jpeg");
  });
  check("top_k 1: one class; top_k 50: all ten ranked", [&] {
    const auto one = client.infer(fp, frame_stage, {pgm}, 5000.0, 1);
    require(one.ok() && one.classes && one.classes->size() == 1, "top-1");
    const auto all = client.infer(fp, frame_stage, {pgm}, 5000.0, 50);
    require(all.ok() && all.classes && all.classes->size() == 10, "ten ranked classes");
    require(static_cast<std::int64_t>((*all.classes)[0]) == one.top_class(), "same best class");
  });

  const jetsplit::StageInfo* carry_stage = nullptr;
  for (const auto& s : carry_bundle->stages)
    if (s.where == "cloud") carry_stage = &s;
  std::vector<std::uint64_t> carry_shape;
  for (const auto& dim : carry_stage->inputs[0].shape) carry_shape.push_back(dim ? *dim : 1);
  std::uint64_t n = 1;
  for (auto dim : carry_shape) n *= dim;
  std::vector<float> act(n);
  for (std::size_t i = 0; i < n; ++i) act[i] = static_cast<float>((i * 37) % 101) / 50.0f;
  std::vector<std::uint8_t> act_bytes(n * 4);
  std::memcpy(act_bytes.data(), act.data(), act_bytes.size());  // little-endian hosts (x86_64, aarch64)
  std::vector<double> carry_raw;
  const std::string cfp = carry_bundle->fingerprint;
  check("carry raw float32", [&] {
    carry_raw = scores_of(client, cfp, carry_stage->index,
                          jetsplit::Tensor::raw("carry", "float32", carry_shape, act_bytes));
  });
  for (const std::string enc : {"f16", "i8"}) {
    for (const std::string comp : {"none", "lz4", "zstd"}) {
      check("carry " + enc + "+" + comp + ": close to raw", [&] {
        auto t = enc == "f16" ? jetsplit::Tensor::f16("carry", carry_shape, act)
                              : jetsplit::Tensor::i8("carry", carry_shape, act);
        t.compress(comp);
        require_close(scores_of(client, cfp, carry_stage->index, t), carry_raw, enc == "f16" ? 0.01 : 0.1, enc);
      });
    }
  }

  // ------------------------------------------------------------ every status it handles
  check("UNKNOWN_BUNDLE", [&] {
    const auto r = client.infer(std::string(64, 'f'), frame_stage, {pgm}, 5000.0, 1);
    require(r.status == Status::UNKNOWN_BUNDLE, jetsplit::status_name(r.status));
  });
  check("UNKNOWN_STAGE", [&] {
    const auto r = client.infer(fp, 0, {pgm}, 5000.0, 1);
    require(r.status == Status::UNKNOWN_STAGE, jetsplit::status_name(r.status));
  });
  check("EXPIRED: a deadline of 0", [&] {
    const auto r = client.infer(fp, frame_stage, {pgm}, 0.0, 1);
    require(r.status == Status::EXPIRED, jetsplit::status_name(r.status));
  });
  check("BAD_REQUEST: a carried tensor where the stage takes the frame", [&] {
    const auto r = client.infer(fp, frame_stage, {jetsplit::Tensor::raw("carry", "float32", {1, 1}, Bytes(4))},
                                5000.0, 1);
    require(r.status == Status::BAD_REQUEST && !r.message.empty(), jetsplit::status_name(r.status));
  });
  check("TOO_LARGE: more tensors than max_tensors", [&] {
    std::vector<jetsplit::Tensor> many;
    for (std::uint64_t i = 0; i <= d.limits.max_tensors; ++i)
      many.push_back(jetsplit::Tensor::raw("t" + std::to_string(i), "uint8", {1}, Bytes(1)));
    const auto r = client.infer(fp, frame_stage, many, 5000.0, 1);
    require(r.status == Status::TOO_LARGE, jetsplit::status_name(r.status));
  });
  check("UNSUPPORTED_VERSION: answered in version 1 with our id", [&] {
    const std::uint64_t id = client.next_id();
    const auto header = pack_map([&](auto& p) {
      p.pack_map(3);
      p.pack(std::string("kind"));
      p.pack(std::string("ping"));
      p.pack(std::string("v"));
      p.pack(99);
      p.pack(std::string("id"));
      p.pack(id);
    });
    const auto r = jetsplit::Client::decode_reply(client.exchange({header}, id)[0]);
    require_status(r, Status::UNSUPPORTED_VERSION, id);
    require(r.version == 1, "version " + std::to_string(r.version));
  });
  check("BAD_REQUEST with our id: trailing bytes after the header", [&] {
    const std::uint64_t id = client.next_id();
    auto frames = jetsplit::encode_infer(id, fp, frame_stage, {pgm}, 5000.0, 1);
    frames[0].push_back(0x00);
    require_status(jetsplit::Client::decode_reply(client.exchange(frames, id)[0]), Status::BAD_REQUEST, id);
  });
  check("errors carry the request's id", [&] {
    const auto r = client.infer(fp, 0, {pgm}, 5000.0, 1);
    require(!r.ok() && !r.id_unknown && r.id != 0, "id " + std::to_string(r.id));
  });
  check("still serving", [&] { require(client.ping().state == "serving", "pong"); });
  std::cout << (failures ? "FAILED " : "passed ") << count - failures << " of " << count << std::endl;
  return failures ? 1 : 0;
}
