// kiln_fuzz_replay onnx|engine PATH...: runs each file (or every file of each directory) through the same fuzz
// target the libFuzzer binaries use and prints what happened. Exits non-zero only when a file crashes it (which
// then takes the process down) or a path cannot be read; --save-engines DIR writes the engines built from ONNX
// inputs there (the engine target's seeds); with --expect-error every file must also be rejected
// (accepted == a regression input that no longer fails loudly).
#include <cstdio>
#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "fuzz_targets.h"

namespace fs = std::filesystem;

int main(int argc, char** argv) {
  if (argc < 3 || (std::strcmp(argv[1], "onnx") != 0 && std::strcmp(argv[1], "engine") != 0)) {
    std::fprintf(stderr, "usage: %s onnx|engine [--expect-error] [--save-engines DIR] PATH...\n", argv[0]);
    return 2;
  }
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // a crash must not swallow the lines before it
  bool onnx = std::strcmp(argv[1], "onnx") == 0;
  bool expect_error = false;
  std::string save_dir;
  std::vector<fs::path> files;
  for (int i = 2; i < argc; ++i) {
    if (std::strcmp(argv[i], "--expect-error") == 0) {
      expect_error = true;
      continue;
    }
    if (std::strcmp(argv[i], "--save-engines") == 0 && i + 1 < argc) {
      save_dir = argv[++i];
      continue;
    }
    std::error_code ec;
    if (fs::is_directory(argv[i], ec)) {
      for (auto& e : fs::recursive_directory_iterator(argv[i]))
        if (e.is_regular_file()) files.push_back(e.path());
    } else if (fs::exists(argv[i], ec)) {
      files.push_back(argv[i]);
    } else {
      std::fprintf(stderr, "%s: no such file or directory\n", argv[i]);
      return 2;
    }
  }
  std::sort(files.begin(), files.end());
  int bad = 0;
  for (auto& f : files) {
    std::ifstream in(f, std::ios::binary);
    std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    auto r = onnx ? kiln::fuzz::run_onnx(bytes.data(), bytes.size()) : kiln::fuzz::run_engine(bytes.data(), bytes.size());
    const char* what = r.ran ? "ran" : r.accepted ? "accepted" : "rejected";
    std::printf("%s: %s%s%s\n", f.string().c_str(), what, r.message.empty() ? "" : ": ", r.message.c_str());
    if (!save_dir.empty() && !r.engine.empty()) {
      std::ofstream o(fs::path(save_dir) / (f.parent_path().filename().string() + "_" + f.stem().string() + ".kiln"),
                      std::ios::binary);
      o.write(reinterpret_cast<const char*>(r.engine.data()), static_cast<std::streamsize>(r.engine.size()));
    }
    if (expect_error && r.message.empty()) {
      std::printf("  ^ expected an error\n");
      ++bad;
    }
  }
  std::printf("%zu files, %d unexpected\n", files.size(), bad);
  return bad ? 1 : 0;
}
