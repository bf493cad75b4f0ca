// jetsplit C++17 client: the wire protocol of protocol/SPEC.md (version 2),
// written from the spec alone. libzmq (sockets, CURVE), msgpack-cxx (headers),
// lz4 and zstd (compressed payloads).
//
//   jetsplit::Client client("tcp://worker:5555");
//   jetsplit::Description d = client.describe();            // what it serves
//   auto frame = jetsplit::Tensor::raw("frame", "uint8", {28, 28}, pixels);
//   jetsplit::Reply r = client.infer(d.bundles[0].fingerprint, 1, {frame}, 1000.0, 1);
//   if (r.ok()) std::cout << d.bundles[0].labels[r.top_class()] << "\n";
//
// Errors of the server come back as a Reply with its status; transport problems
// (no answer in time, a malformed reply) throw jetsplit::Error.
#pragma once

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace jetsplit {

/// The protocol version this client sends (SPEC.md section 9).
constexpr int kProtocolVersion = 2;

/// Status codes, SPEC.md section 6.
enum class Status : int {
  OK = 0,
  EXPIRED = 1,
  BAD_REQUEST = 2,
  UNKNOWN_BUNDLE = 3,
  UNKNOWN_STAGE = 4,
  OVERLOADED = 5,
  INTERNAL = 6,
  UNSUPPORTED_VERSION = 7,
  TOO_LARGE = 8,
  UNSUPPORTED_ENCODING = 9,
  SHUTTING_DOWN = 10,
};

/// "OK", "EXPIRED", ...; a code this client does not know reads as INTERNAL (SPEC.md 6).
std::string status_name(Status status);
Status status_from_code(std::int64_t code);

/// A transport or protocol problem: no answer in time, a malformed reply, bad input.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// One tensor of a request, already encoded for the wire (SPEC.md 3.3, 4, 5).
struct Tensor {
  std::string name;
  std::string dtype;                 // of the decoded array
  std::vector<std::uint64_t> shape;  // of the decoded array
  std::string encoding = "raw";      // raw | f16 | i8 | jpeg
  std::optional<double> scale;       // i8 only
  std::string compression = "none";  // none | lz4 | zstd
  std::vector<std::uint8_t> payload; // the frame as sent

  /// Elements as ``dtype``, little-endian, C order (``data`` is copied).
  static Tensor raw(const std::string& name, const std::string& dtype, std::vector<std::uint64_t> shape,
                    const std::vector<std::uint8_t>& data);
  /// float32 values sent as IEEE binary16 (the server widens them to ``dtype``).
  static Tensor f16(const std::string& name, std::vector<std::uint64_t> shape, const std::vector<float>& values,
                    const std::string& dtype = "float32");
  /// float32 values sent as symmetric int8 with one scale (max|x|/127).
  static Tensor i8(const std::string& name, std::vector<std::uint64_t> shape, const std::vector<float>& values,
                   const std::string& dtype = "float32");
  /// A JPEG file as it is; the shape comes from its frame header (SOF):
  /// [H, W] for 1 component, [H, W, 3] for 3 (B, G, R channels: SPEC.md 4).
  static Tensor jpeg(const std::string& name, const std::vector<std::uint8_t>& file);

  /// Compress the payload as one LZ4 or Zstandard frame (not for jpeg).
  Tensor& compress(const std::string& compression);
};

/// Height, width and components from a JPEG's SOFn segment, without decoding.
struct JpegSize {
  std::uint32_t height, width, components;
};
JpegSize jpeg_size(const std::vector<std::uint8_t>& file);

/// IEEE binary16 bits of a float (round to nearest even), and back.
std::uint16_t float_to_half(float value);
float half_to_float(std::uint16_t bits);

// ---------------------------------------------------------------- description (SPEC.md 3.9)

struct TensorInfo {
  std::string name, dtype;
  std::vector<std::optional<std::uint64_t>> shape;  // nullopt: any size
  std::vector<std::string> encodings, compressions;
  std::optional<std::int64_t> value;
};

struct PreprocessInfo {
  std::uint32_t height = 0, width = 0;
  std::string colour, layout, dtype, interpolation;
  double scale = 1.0;
  std::vector<double> mean, std;
};

struct StageInfo {
  std::uint32_t index = 0;
  std::string name, where, input, combine;
  std::vector<TensorInfo> inputs, outputs;
  std::optional<PreprocessInfo> preprocess;
  std::optional<std::string> gate_kind;
  double gate_threshold = 0.0;

  /// True for a cloud stage whose request carries the frame and nothing else.
  bool takes_frames_only() const;
};

struct BundleInfo {
  std::string name, fingerprint;
  std::vector<std::string> labels;
  std::vector<StageInfo> stages;
};

struct Limits {
  std::uint64_t max_message_bytes = 0, max_header_bytes = 0, max_tensors = 0, max_rank = 0, max_elements = 0,
                max_decoded_bytes = 0;
};

struct Description {
  std::uint64_t id = 0;
  std::string server, state = "serving";
  std::vector<std::string> encodings, compressions;
  Limits limits;
  std::vector<BundleInfo> bundles;
};

struct Pong {
  std::uint64_t id = 0;
  std::string server, state = "serving";
  std::vector<std::string> bundles;
  std::uint64_t max_message_bytes = 0, load = 0;
};

/// The answer to one infer request: a result (status OK) or an error.
struct Reply {
  std::uint64_t id = 0;
  int version = kProtocolVersion;
  Status status = Status::INTERNAL;
  std::string message;
  std::int64_t stage = -1;
  std::vector<double> scores;
  std::optional<std::vector<std::uint64_t>> classes;  // nullopt: scores[i] is class i
  double queue_ms = 0.0, compute_ms = 0.0;
  bool id_unknown = false;  // an error with id 0, taken as the answer of the one request in flight (SPEC.md 7.1)

  bool ok() const { return status == Status::OK; }
  /// The best class (-1 without scores).
  std::int64_t top_class() const;
  double top_score() const;
};

/// CURVE keys as Z85 text (40 characters each), SPEC.md section 8.
struct CurveKeys {
  std::string server_public, client_public, client_secret;
};
/// The keys of ZeroMQ certificate files: the client's NAME.key_secret and the server's NAME.key.
CurveKeys load_curve_keys(const std::string& client_secret_file, const std::string& server_public_file);

struct Options {
  int timeout_ms = 3000;
  std::optional<CurveKeys> curve;
  std::uint64_t max_message_bytes = 64ull << 20;  // receive limit (ZMQ_MAXMSGSIZE)
};

/// A DEALER connection to one server; one request at a time; not thread-safe.
class Client {
 public:
  explicit Client(std::string endpoint, Options options = {});
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  Pong ping();
  Description describe();
  Reply infer(const std::string& fingerprint, std::uint32_t stage, const std::vector<Tensor>& tensors,
              double deadline_ms, std::uint32_t top_k = 0);

  /// Send raw frames (a hand-made header first) and return the reply frames whose
  /// header's id is ``want_id``: for tests of the server's error handling.
  std::vector<std::vector<std::uint8_t>> exchange(const std::vector<std::vector<std::uint8_t>>& frames,
                                                  std::uint64_t want_id);
  /// Decode a result or error header (throws Error if it is malformed).
  static Reply decode_reply(const std::vector<std::uint8_t>& header);

  std::uint64_t next_id();
  const std::string& endpoint() const { return endpoint_; }

 private:
  void open();
  void close();
  void send(const std::vector<std::vector<std::uint8_t>>& frames);
  std::vector<std::vector<std::uint8_t>> receive(std::uint64_t want_id, bool accept_id_zero);

  std::string endpoint_;
  Options options_;
  void* context_ = nullptr;
  void* socket_ = nullptr;
  std::uint64_t next_id_ = 0;
};

/// The header and payload frames of an infer request (exposed for tests).
std::vector<std::vector<std::uint8_t>> encode_infer(std::uint64_t id, const std::string& fingerprint,
                                                    std::uint32_t stage, const std::vector<Tensor>& tensors,
                                                    double deadline_ms, std::uint32_t top_k);

}  // namespace jetsplit
