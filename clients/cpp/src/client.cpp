// Headers (SPEC.md section 3) and the DEALER socket (section 2) of the C++ client.
#include <zmq.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <msgpack.hpp>
#include <random>
#include <set>

#include "jetsplit/client.hpp"

namespace jetsplit {
namespace {

using Bytes = std::vector<std::uint8_t>;
using Packer = msgpack::packer<msgpack::sbuffer>;

void pack_str(Packer& p, const std::string& s) { p.pack(s); }

Bytes to_bytes(const msgpack::sbuffer& buf) {
  return Bytes(reinterpret_cast<const std::uint8_t*>(buf.data()),
               reinterpret_cast<const std::uint8_t*>(buf.data()) + buf.size());
}

Bytes header_only(const std::string& kind, std::uint64_t id) {
  msgpack::sbuffer buf;
  Packer p(buf);
  p.pack_map(3);
  pack_str(p, "kind");
  pack_str(p, kind);
  pack_str(p, "v");
  p.pack(kProtocolVersion);
  pack_str(p, "id");
  p.pack(id);
  return to_bytes(buf);
}

// ---------------------------------------------------------------- strict reading

[[noreturn]] void malformed(const std::string& what) { throw Error("malformed reply: " + what); }

/// The one MessagePack value of a header frame; trailing bytes are malformed (SPEC.md 3).
msgpack::object_handle parse(const Bytes& frame) {
  std::size_t offset = 0;
  msgpack::object_handle handle;
  try {
    handle = msgpack::unpack(reinterpret_cast<const char*>(frame.data()), frame.size(), offset);
  } catch (const std::exception& exc) {
    malformed(std::string("not MessagePack: ") + exc.what());
  }
  if (offset != frame.size()) malformed("bytes after the header map");
  if (handle.get().type != msgpack::type::MAP) malformed("the header is not a map");
  return handle;
}

std::string as_str(const msgpack::object& o, const std::string& field) {
  if (o.type != msgpack::type::STR) malformed(field + " is not a string");
  return std::string(o.via.str.ptr, o.via.str.size);
}

std::uint64_t as_uint(const msgpack::object& o, const std::string& field) {
  if (o.type != msgpack::type::POSITIVE_INTEGER) malformed(field + " is not an unsigned integer");
  return o.via.u64;
}

std::int64_t as_int(const msgpack::object& o, const std::string& field) {
  if (o.type == msgpack::type::POSITIVE_INTEGER) {
    if (o.via.u64 > static_cast<std::uint64_t>(INT64_MAX)) malformed(field + " is out of range");
    return static_cast<std::int64_t>(o.via.u64);
  }
  if (o.type == msgpack::type::NEGATIVE_INTEGER) return o.via.i64;
  malformed(field + " is not an integer");
}

double as_float(const msgpack::object& o, const std::string& field) {
  // SPEC.md 3: a float field accepts a float32, a float64 or an integer.
  switch (o.type) {
    case msgpack::type::FLOAT32:
    case msgpack::type::FLOAT64:
      return o.via.f64;
    case msgpack::type::POSITIVE_INTEGER:
      return static_cast<double>(o.via.u64);
    case msgpack::type::NEGATIVE_INTEGER:
      return static_cast<double>(o.via.i64);
    default:
      malformed(field + " is not a number");
  }
}

const msgpack::object_array& as_array(const msgpack::object& o, const std::string& field) {
  if (o.type != msgpack::type::ARRAY) malformed(field + " is not an array");
  return o.via.array;
}

std::vector<std::string> as_strs(const msgpack::object& o, const std::string& field) {
  std::vector<std::string> out;
  for (const auto& item : as_array(o, field)) out.push_back(as_str(item, field));
  return out;
}

/// Visit every entry of a map: keys must be strings, none repeated, each known to
/// ``visit`` (which returns false for an unknown one); ``required`` must all appear.
template <typename Visit>
void each_field(const msgpack::object& map, const std::string& where, const std::set<std::string>& required,
                Visit visit) {
  if (map.type != msgpack::type::MAP) malformed(where + " is not a map");
  std::set<std::string> seen;
  for (const auto& kv : map.via.map) {
    const std::string key = as_str(kv.key, where + " key");
    if (!seen.insert(key).second) malformed(where + " repeats the key " + key);
    if (!visit(key, kv.val)) malformed(where + " has an unknown field " + key);
  }
  for (const auto& r : required)
    if (!seen.count(r)) malformed(where + " lacks " + r);
}

/// kind, v and id of a header; ``v`` must be one this client reads.
struct Envelope {
  std::string kind;
  std::int64_t v = 0;
  std::uint64_t id = 0;
};

bool envelope_field(Envelope& e, const std::string& key, const msgpack::object& val) {
  if (key == "kind") {
    e.kind = as_str(val, "kind");
  } else if (key == "v") {
    e.v = static_cast<std::int64_t>(as_uint(val, "v"));
  } else if (key == "id") {
    e.id = as_uint(val, "id");
    if (e.id > static_cast<std::uint64_t>(INT64_MAX)) malformed("id over 2^63-1");
  } else {
    return false;
  }
  return true;
}

void check_version(const Envelope& e) {
  if (e.v != kProtocolVersion && e.v != 1) malformed("protocol version " + std::to_string(e.v));
}

TensorInfo tensor_info(const msgpack::object& o) {
  TensorInfo t;
  each_field(o, "tensor", {"name", "dtype", "shape"}, [&](const std::string& k, const msgpack::object& v) {
    if (k == "name") t.name = as_str(v, k);
    else if (k == "dtype") t.dtype = as_str(v, k);
    else if (k == "shape") {
      for (const auto& d : as_array(v, k)) {
        if (d.type == msgpack::type::NIL) t.shape.emplace_back(std::nullopt);
        else t.shape.emplace_back(as_uint(d, "shape"));
      }
    } else if (k == "encodings") t.encodings = as_strs(v, k);
    else if (k == "compressions") t.compressions = as_strs(v, k);
    else if (k == "value") {
      if (v.type != msgpack::type::NIL) t.value = as_int(v, k);
    } else return false;
    return true;
  });
  return t;
}

PreprocessInfo preprocess_info(const msgpack::object& o) {
  PreprocessInfo p;
  each_field(o, "preprocess",
             {"height", "width", "colour", "layout", "dtype", "scale", "mean", "std", "interpolation"},
             [&](const std::string& k, const msgpack::object& v) {
               if (k == "height") p.height = static_cast<std::uint32_t>(as_uint(v, k));
               else if (k == "width") p.width = static_cast<std::uint32_t>(as_uint(v, k));
               else if (k == "colour") p.colour = as_str(v, k);
               else if (k == "layout") p.layout = as_str(v, k);
               else if (k == "dtype") p.dtype = as_str(v, k);
               else if (k == "interpolation") p.interpolation = as_str(v, k);
               else if (k == "scale") p.scale = as_float(v, k);
               else if (k == "mean" || k == "std") {
                 auto& out = k == "mean" ? p.mean : p.std;
                 for (const auto& x : as_array(v, k)) out.push_back(as_float(x, k));
               } else return false;
               return true;
             });
  return p;
}

StageInfo stage_info(const msgpack::object& o) {
  StageInfo s;
  each_field(o, "stage", {"index", "name", "where", "input", "combine"},
             [&](const std::string& k, const msgpack::object& v) {
               if (k == "index") s.index = static_cast<std::uint32_t>(as_uint(v, k));
               else if (k == "name") s.name = as_str(v, k);
               else if (k == "where") s.where = as_str(v, k);
               else if (k == "input") s.input = as_str(v, k);
               else if (k == "combine") s.combine = as_str(v, k);
               else if (k == "inputs" || k == "outputs") {
                 auto& out = k == "inputs" ? s.inputs : s.outputs;
                 for (const auto& t : as_array(v, k)) out.push_back(tensor_info(t));
               } else if (k == "preprocess") {
                 if (v.type != msgpack::type::NIL) s.preprocess = preprocess_info(v);
               } else if (k == "gate") {
                 if (v.type == msgpack::type::NIL) return true;
                 each_field(v, "gate", {"kind", "threshold"}, [&](const std::string& gk, const msgpack::object& gv) {
                   if (gk == "kind") s.gate_kind = as_str(gv, gk);
                   else if (gk == "threshold") s.gate_threshold = as_float(gv, gk);
                   else return false;
                   return true;
                 });
               } else return false;
               return true;
             });
  return s;
}

BundleInfo bundle_info(const msgpack::object& o) {
  BundleInfo b;
  each_field(o, "bundle", {"name", "fingerprint", "labels", "stages"},
             [&](const std::string& k, const msgpack::object& v) {
               if (k == "name") b.name = as_str(v, k);
               else if (k == "fingerprint") b.fingerprint = as_str(v, k);
               else if (k == "labels") b.labels = as_strs(v, k);
               else if (k == "stages") {
                 for (const auto& s : as_array(v, k)) b.stages.push_back(stage_info(s));
               } else return false;
               return true;
             });
  for (std::size_t i = 0; i < b.stages.size(); ++i)
    if (b.stages[i].index != i) malformed("bundle " + b.name + ": stage indexes are not 0..n-1");
  return b;
}

std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace

std::string status_name(Status status) {
  switch (status) {
    case Status::OK: return "OK";
    case Status::EXPIRED: return "EXPIRED";
    case Status::BAD_REQUEST: return "BAD_REQUEST";
    case Status::UNKNOWN_BUNDLE: return "UNKNOWN_BUNDLE";
    case Status::UNKNOWN_STAGE: return "UNKNOWN_STAGE";
    case Status::OVERLOADED: return "OVERLOADED";
    case Status::INTERNAL: return "INTERNAL";
    case Status::UNSUPPORTED_VERSION: return "UNSUPPORTED_VERSION";
    case Status::TOO_LARGE: return "TOO_LARGE";
    case Status::UNSUPPORTED_ENCODING: return "UNSUPPORTED_ENCODING";
    case Status::SHUTTING_DOWN: return "SHUTTING_DOWN";
  }
  return "INTERNAL";
}

Status status_from_code(std::int64_t code) {
  // SPEC.md 6: a code the client does not know is INTERNAL.
  return code >= 0 && code <= 10 ? static_cast<Status>(code) : Status::INTERNAL;
}

bool StageInfo::takes_frames_only() const {
  return where == "cloud" && inputs.size() == 1 && inputs[0].name == "frame";
}

std::int64_t Reply::top_class() const {
  if (scores.empty()) return -1;
  const auto best = static_cast<std::size_t>(std::max_element(scores.begin(), scores.end()) - scores.begin());
  return classes ? static_cast<std::int64_t>((*classes)[best]) : static_cast<std::int64_t>(best);
}

double Reply::top_score() const { return scores.empty() ? 0.0 : *std::max_element(scores.begin(), scores.end()); }

std::vector<Bytes> encode_infer(std::uint64_t id, const std::string& fingerprint, std::uint32_t stage,
                                const std::vector<Tensor>& tensors, double deadline_ms, std::uint32_t top_k) {
  msgpack::sbuffer buf;
  Packer p(buf);
  p.pack_map(8);
  pack_str(p, "kind");
  pack_str(p, "infer");
  pack_str(p, "v");
  p.pack(kProtocolVersion);
  pack_str(p, "id");
  p.pack(id);
  pack_str(p, "bundle");
  pack_str(p, fingerprint);
  pack_str(p, "stage");
  p.pack(stage);
  pack_str(p, "deadline_ms");
  p.pack_double(std::max(0.0, deadline_ms));
  pack_str(p, "top_k");
  p.pack(top_k);
  pack_str(p, "tensors");
  p.pack_array(static_cast<std::uint32_t>(tensors.size()));
  std::vector<Bytes> frames(1);
  for (const Tensor& t : tensors) {
    p.pack_map(7);
    pack_str(p, "name");
    pack_str(p, t.name);
    pack_str(p, "dtype");
    pack_str(p, t.dtype);
    pack_str(p, "shape");
    p.pack_array(static_cast<std::uint32_t>(t.shape.size()));
    for (auto d : t.shape) p.pack(d);
    pack_str(p, "encoding");
    pack_str(p, t.encoding);
    pack_str(p, "scale");
    if (t.scale) p.pack_double(*t.scale);
    else p.pack_nil();
    pack_str(p, "compression");
    pack_str(p, t.compression);
    pack_str(p, "nbytes");
    p.pack(static_cast<std::uint64_t>(t.payload.size()));
    frames.push_back(t.payload);
  }
  frames[0] = to_bytes(buf);
  return frames;
}

Reply Client::decode_reply(const Bytes& header) {
  const auto handle = parse(header);
  Envelope e;
  Reply r;
  std::optional<std::int64_t> status;
  bool has_stage = false;
  each_field(handle.get(), "header", {"kind", "v", "id"}, [&](const std::string& k, const msgpack::object& v) {
    if (envelope_field(e, k, v)) return true;
    if (k == "status") status = static_cast<std::int64_t>(as_uint(v, k));
    else if (k == "message") r.message = as_str(v, k);
    else if (k == "stage") {
      r.stage = static_cast<std::int64_t>(as_uint(v, k));
      has_stage = true;
    } else if (k == "scores") {
      for (const auto& s : as_array(v, k)) r.scores.push_back(as_float(s, k));
    } else if (k == "classes") {
      if (v.type == msgpack::type::NIL) return true;
      std::vector<std::uint64_t> classes;
      for (const auto& c : as_array(v, k)) classes.push_back(as_uint(c, k));
      r.classes = std::move(classes);
    } else if (k == "queue_ms") r.queue_ms = as_float(v, k);
    else if (k == "compute_ms") r.compute_ms = as_float(v, k);
    else if (k == "tensors") as_array(v, k);  // extra outputs: this client does not use them
    else return false;
    return true;
  });
  check_version(e);
  r.id = e.id;
  r.version = static_cast<int>(e.v);
  if (e.kind == "result") {
    if (!has_stage) malformed("result lacks stage");
    if (status && *status != 0) malformed("a result's status must be 0");
    if (r.classes && r.classes->size() != r.scores.size()) malformed("classes and scores differ in length");
    r.status = Status::OK;
  } else if (e.kind == "error") {
    if (!status || *status < 1 || *status > 255) malformed("error without a status in 1..255");
    r.status = status_from_code(*status);
  } else {
    malformed("expected a result or an error, got a " + e.kind);
  }
  return r;
}

// ---------------------------------------------------------------- the socket

Client::Client(std::string endpoint, Options options) : endpoint_(std::move(endpoint)), options_(std::move(options)) {
  std::random_device rd;
  next_id_ = (static_cast<std::uint64_t>(rd()) & 0x7FFFFFFFull) + 1;  // ids differ between clients
  context_ = zmq_ctx_new();
  if (!context_) throw Error("zmq_ctx_new failed");
  try {
    open();
  } catch (...) {
    zmq_ctx_term(context_);
    throw;
  }
}

Client::~Client() {
  close();
  zmq_ctx_term(context_);
}

void Client::open() {
  socket_ = zmq_socket(context_, ZMQ_DEALER);
  if (!socket_) throw Error(std::string("zmq_socket: ") + zmq_strerror(zmq_errno()));
  auto set_int = [&](int option, int value) { zmq_setsockopt(socket_, option, &value, sizeof(value)); };
  set_int(ZMQ_LINGER, 0);
  set_int(ZMQ_IMMEDIATE, 1);  // never queue a request to a connection that is not up (SPEC.md 2)
  set_int(ZMQ_SNDHWM, 1000);
  set_int(ZMQ_RCVHWM, 1000);
  set_int(ZMQ_RECONNECT_IVL, 100);
  set_int(ZMQ_RECONNECT_IVL_MAX, 2000);
  set_int(ZMQ_HEARTBEAT_IVL, 2000);
  set_int(ZMQ_HEARTBEAT_TIMEOUT, 6000);
  const std::int64_t max_size = static_cast<std::int64_t>(options_.max_message_bytes);
  zmq_setsockopt(socket_, ZMQ_MAXMSGSIZE, &max_size, sizeof(max_size));
  if (options_.curve) {
    const CurveKeys& k = *options_.curve;
    if (zmq_setsockopt(socket_, ZMQ_CURVE_SERVERKEY, k.server_public.data(), 40) != 0 ||
        zmq_setsockopt(socket_, ZMQ_CURVE_PUBLICKEY, k.client_public.data(), 40) != 0 ||
        zmq_setsockopt(socket_, ZMQ_CURVE_SECRETKEY, k.client_secret.data(), 40) != 0) {
      const std::string why = zmq_strerror(zmq_errno());
      close();
      throw Error("CURVE keys refused by libzmq (" + why + "): is it built with libsodium?");
    }
  }
  if (zmq_connect(socket_, endpoint_.c_str()) != 0) {
    const std::string why = zmq_strerror(zmq_errno());
    close();
    throw Error("cannot connect to " + endpoint_ + ": " + why);
  }
}

void Client::close() {
  if (socket_) {
    zmq_close(socket_);
    socket_ = nullptr;
  }
}

std::uint64_t Client::next_id() {
  next_id_ = next_id_ % static_cast<std::uint64_t>(INT64_MAX) + 1;  // 1 .. 2^63-1: never 0 (SPEC.md 3.1)
  return next_id_;
}

void Client::send(const std::vector<Bytes>& frames) {
  zmq_pollitem_t item{socket_, 0, ZMQ_POLLOUT, 0};
  if (zmq_poll(&item, 1, options_.timeout_ms) <= 0) {
    // Lazy pirate (SPEC.md 10): a fresh socket reaches a restarted server.
    close();
    open();
    throw Error("no connection to " + endpoint_ + " within " + std::to_string(options_.timeout_ms) +
                " ms (is a worker listening there? does it need CURVE keys: --curve-secret/--curve-server-key?)");
  }
  for (std::size_t i = 0; i < frames.size(); ++i) {
    const int flags = (i + 1 < frames.size() ? ZMQ_SNDMORE : 0) | ZMQ_DONTWAIT;
    if (zmq_send(socket_, frames[i].data(), frames[i].size(), flags) < 0)
      throw Error(std::string("send failed: ") + zmq_strerror(zmq_errno()));
  }
}

std::vector<Bytes> Client::receive(std::uint64_t want_id, bool accept_id_zero) {
  const std::int64_t end = now_ms() + options_.timeout_ms;
  while (true) {
    const std::int64_t left = end - now_ms();
    zmq_pollitem_t item{socket_, 0, ZMQ_POLLIN, 0};
    if (left <= 0 || zmq_poll(&item, 1, static_cast<long>(left)) <= 0) break;
    std::vector<Bytes> frames;
    int more = 1;
    while (more) {
      zmq_msg_t msg;
      zmq_msg_init(&msg);
      if (zmq_msg_recv(&msg, socket_, 0) < 0) {
        zmq_msg_close(&msg);
        throw Error(std::string("receive failed: ") + zmq_strerror(zmq_errno()));
      }
      const auto* data = static_cast<const std::uint8_t*>(zmq_msg_data(&msg));
      frames.emplace_back(data, data + zmq_msg_size(&msg));
      more = zmq_msg_more(&msg);
      zmq_msg_close(&msg);
    }
    // Which request does it answer? A reply we cannot even read is dropped (SPEC.md 7).
    std::uint64_t id = 0;
    try {
      const auto handle = parse(frames[0]);
      for (const auto& kv : handle.get().via.map)
        if (kv.key.type == msgpack::type::STR && std::string(kv.key.via.str.ptr, kv.key.via.str.size) == "id" &&
            kv.val.type == msgpack::type::POSITIVE_INTEGER)
          id = kv.val.via.u64;
    } catch (const Error&) {
      continue;
    }
    if (id == want_id || (accept_id_zero && id == 0)) return frames;
    // Anything else answers a request given up on earlier: dropped.
  }
  close();
  open();
  throw Error("no reply from " + endpoint_ + " within " + std::to_string(options_.timeout_ms) + " ms");
}

std::vector<Bytes> Client::exchange(const std::vector<Bytes>& frames, std::uint64_t want_id) {
  send(frames);
  return receive(want_id, false);
}

Pong Client::ping() {
  const std::uint64_t id = next_id();
  send({header_only("ping", id)});
  const auto frames = receive(id, false);
  const auto handle = parse(frames[0]);
  Envelope e;
  Pong pong;
  each_field(handle.get(), "pong", {"kind", "v", "id"}, [&](const std::string& k, const msgpack::object& v) {
    if (envelope_field(e, k, v)) return true;
    if (k == "server") pong.server = as_str(v, k);
    else if (k == "bundles") pong.bundles = as_strs(v, k);
    else if (k == "max_message_bytes") pong.max_message_bytes = as_uint(v, k);
    else if (k == "state") pong.state = as_str(v, k);
    else if (k == "load") pong.load = as_uint(v, k);
    else return false;
    return true;
  });
  check_version(e);
  if (e.kind != "pong") {
    if (e.kind == "error") throw Error("the server answered ping with an error: " + decode_reply(frames[0]).message);
    malformed("expected a pong, got a " + e.kind);
  }
  pong.id = e.id;
  return pong;
}

Description Client::describe() {
  const std::uint64_t id = next_id();
  send({header_only("describe", id)});
  const auto frames = receive(id, false);
  const auto handle = parse(frames[0]);
  Envelope e;
  Description d;
  bool has_limits = false;
  each_field(handle.get(), "description", {"kind", "v", "id"}, [&](const std::string& k, const msgpack::object& v) {
    if (envelope_field(e, k, v)) return true;
    if (k == "server") d.server = as_str(v, k);
    else if (k == "state") d.state = as_str(v, k);
    else if (k == "encodings") d.encodings = as_strs(v, k);
    else if (k == "compressions") d.compressions = as_strs(v, k);
    else if (k == "limits") {
      has_limits = true;
      each_field(v, "limits",
                 {"max_message_bytes", "max_header_bytes", "max_tensors", "max_rank", "max_elements",
                  "max_decoded_bytes"},
                 [&](const std::string& lk, const msgpack::object& lv) {
                   const std::uint64_t x = as_uint(lv, lk);
                   if (lk == "max_message_bytes") d.limits.max_message_bytes = x;
                   else if (lk == "max_header_bytes") d.limits.max_header_bytes = x;
                   else if (lk == "max_tensors") d.limits.max_tensors = x;
                   else if (lk == "max_rank") d.limits.max_rank = x;
                   else if (lk == "max_elements") d.limits.max_elements = x;
                   else if (lk == "max_decoded_bytes") d.limits.max_decoded_bytes = x;
                   else return false;
                   return true;
                 });
    } else if (k == "bundles") {
      for (const auto& b : as_array(v, k)) d.bundles.push_back(bundle_info(b));
    } else return false;
    return true;
  });
  check_version(e);
  if (e.kind == "error") {
    const Reply r = decode_reply(frames[0]);
    throw Error("the server answered describe with " + status_name(r.status) + ": " + r.message);
  }
  if (e.kind != "description") malformed("expected a description, got a " + e.kind);
  if (!has_limits) malformed("description lacks limits");
  d.id = e.id;
  return d;
}

Reply Client::infer(const std::string& fingerprint, std::uint32_t stage, const std::vector<Tensor>& tensors,
                    double deadline_ms, std::uint32_t top_k) {
  const std::uint64_t id = next_id();
  send(encode_infer(id, fingerprint, stage, tensors, deadline_ms, top_k));
  // One request in flight: an error with id 0 can only be its answer (SPEC.md 7.1).
  const auto frames = receive(id, true);
  Reply r = decode_reply(frames[0]);
  if (r.id == 0 && r.status != Status::OK) {
    r.id_unknown = true;
    r.id = id;
  }
  return r;
}

}  // namespace jetsplit
