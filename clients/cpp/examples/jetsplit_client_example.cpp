// jetsplit_client_example ENDPOINT IMAGE... [--bundle NAME] [--timeout-ms N]
//                         [--curve-secret FILE --curve-server-key FILE]
//
// Knowing only the worker's endpoint: describe it, pick its first bundle with a
// cloud stage that takes frames (or --bundle NAME), send each image (a JPEG as it
// is, with encoding jpeg; a binary PGM/PPM raw) and print one JSON line per image:
//   {"image": PATH, "status": "OK", "class_id": 7, "label": "7", "score": 0.998}
// Exit status: 0 when every image got a result, 1 when some got an error status,
// 2 for a usage error, an unreadable image or a worker that does not answer.
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "images.hpp"
#include "jetsplit/client.hpp"

namespace {

std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\u%04x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "\"";
}

int usage(const std::string& why) {
  std::cerr << "jetsplit_client_example: " << why
            << "\nusage: jetsplit_client_example ENDPOINT IMAGE... [--bundle NAME] [--timeout-ms N] "
               "[--curve-secret FILE --curve-server-key FILE]\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::string endpoint, bundle_name, curve_secret, curve_server_key;
  std::vector<std::string> images;
  jetsplit::Options options;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&](const char* flag) -> std::string {
      if (i + 1 >= argc) throw std::invalid_argument(std::string(flag) + " needs a value");
      return argv[++i];
    };
    try {
      if (arg == "--bundle") bundle_name = value("--bundle");
      else if (arg == "--timeout-ms") options.timeout_ms = std::stoi(value("--timeout-ms"));
      else if (arg == "--curve-secret") curve_secret = value("--curve-secret");
      else if (arg == "--curve-server-key") curve_server_key = value("--curve-server-key");
      else if (arg == "-h" || arg == "--help") return usage("describe a worker and classify images with it"), 0;
      else if (arg.rfind("--", 0) == 0) return usage("unknown option " + arg);
      else if (endpoint.empty()) endpoint = arg;
      else images.push_back(arg);
    } catch (const std::exception& exc) {
      return usage(exc.what());
    }
  }
  if (endpoint.empty() || images.empty()) return usage("expected an ENDPOINT and at least one IMAGE");
  if (endpoint.find("://") == std::string::npos)
    return usage("ENDPOINT: expected an endpoint such as tcp://worker:5555, got " + endpoint);
  if (curve_secret.empty() != curve_server_key.empty())
    return usage("expected both --curve-secret and --curve-server-key, got one");
  try {
    if (!curve_secret.empty()) options.curve = jetsplit::load_curve_keys(curve_secret, curve_server_key);
    jetsplit::Client client(endpoint, options);
    const jetsplit::Description d = client.describe();
    const jetsplit::BundleInfo* bundle = nullptr;
    const jetsplit::StageInfo* stage = nullptr;
    std::vector<std::string> names;
    for (const auto& b : d.bundles) {
      names.push_back(b.name);
      if (!bundle_name.empty() && b.name != bundle_name) continue;
      for (const auto& s : b.stages) {
        if (s.takes_frames_only()) {
          bundle = &b;
          stage = &s;
          break;
        }
      }
      if (bundle != nullptr || !bundle_name.empty()) break;
    }
    if (stage == nullptr) {
      std::ostringstream served;
      for (const auto& n : names) served << " " << n;
      std::cerr << "jetsplit_client_example: " << endpoint << " serves no "
                << (bundle_name.empty() ? "bundle" : "bundle named " + bundle_name)
                << " with a cloud stage that takes frames (serves:" << (names.empty() ? " none" : served.str())
                << ")\n";
      return 2;
    }
    const auto& encodings = stage->inputs[0].encodings;
    const bool jpeg_ok = std::find(encodings.begin(), encodings.end(), "jpeg") != encodings.end();
    int failed = 0;
    for (const auto& path : images) {
      jetsplit::Tensor frame = jetsplit_example::image_tensor("frame", path);
      if (frame.encoding == "jpeg" && !jpeg_ok) throw jetsplit::Error(path + ": this worker takes no jpeg frames");
      const jetsplit::Reply r =
          client.infer(bundle->fingerprint, stage->index, {frame}, static_cast<double>(options.timeout_ms), 1);
      std::cout << "{\"image\": " << json_string(path) << ", \"status\": " << json_string(jetsplit::status_name(r.status));
      if (r.ok()) {
        const auto cls = r.top_class();
        const std::string label = cls >= 0 && static_cast<std::size_t>(cls) < bundle->labels.size()
                                      ? bundle->labels[static_cast<std::size_t>(cls)]
                                      : "";
        std::cout << ", \"class_id\": " << cls << ", \"label\": " << json_string(label)
                  << ", \"score\": " << r.top_score();
      } else {
        ++failed;
        std::cout << ", \"class_id\": null, \"label\": null, \"score\": null, \"message\": " << json_string(r.message);
      }
      std::cout << "}" << std::endl;
    }
    return failed ? 1 : 0;
  } catch (const jetsplit::Error& exc) {
    std::cerr << "jetsplit_client_example: " << exc.what() << "\n";
    return 2;
  }
}
