// Entry point of the kiln command-line tool: options -> build or load -> run -> reports (trtexec's flow).
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>

#include "compare.h"
#include "engine_setup.h"
#include "inference.h"
#include "inference_report.h"
#include "layer_info.h"
#include "layer_profiler.h"
#include "kiln/logger.h"
#include "kiln/runtime.h"
#include "options.h"

namespace {

using kiln::ILogger;
using kiln::Status;

int fail(ILogger& logger, const Status& status) {
  logger.log(ILogger::Severity::kERROR, status.to_string().c_str());
  return 1;
}

int run(const kiln::cli::Options& o, kiln::StderrLogger& logger) {
  using namespace kiln::cli;
  if (o.get_plan_version_only) {
    Status st = print_plan_version(o.load_engine);
    return st.ok() ? 0 : fail(logger, st.with_context("--getPlanVersionOnly"));
  }
  auto device = resolve_device(o);
  if (!device.ok()) return fail(logger, device.status());
  std::printf("Device: %s (%s)\n", kiln::backend_name(device->backend), device->reason.c_str());

  size_t engine_size = 0;
  kiln::Runtime runtime(logger);
  std::unique_ptr<kiln::Engine> engine;
  if (!o.onnx.empty()) {
    auto built = build_engine(o, device->backend, logger);
    if (!built.ok()) return fail(logger, built.status());
    std::printf("Engine built in %.3f s (parse %.3f s, build %.3f s); network layers: %d, engine size: %zu bytes\n",
                built->parse_s + built->build_s, built->parse_s, built->build_s, built->num_layers,
                built->bytes.size());
    if (!o.save_engine.empty()) {
      Status st = write_file(o.save_engine, built->bytes);
      if (!st.ok()) return fail(logger, st.with_context("--saveEngine"));
      std::printf("Engine saved to %s\n", o.save_engine.c_str());
    }
    // Run what was written, as trtexec does, so a build-and-run exercises the engine reader too.
    auto loaded = runtime.deserialize_engine(built->bytes.data(), built->bytes.size());
    if (!loaded.ok()) return fail(logger, loaded.status().with_context("failed to deserialize the built engine"));
    engine = std::move(loaded.value());
    engine_size = built->bytes.size();
  } else {
    const auto start = std::chrono::steady_clock::now();
    auto loaded = runtime.load_engine_file(o.load_engine);
    if (!loaded.ok())
      return fail(logger, loaded.status().with_context("failed to load engine '" + o.load_engine + "'"));
    engine = std::move(loaded.value());
    std::printf("Engine loaded in %.3f s\n",
                std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    std::error_code ec;
    const auto file_size = std::filesystem::file_size(o.load_engine, ec);
    engine_size = ec ? 0 : static_cast<size_t>(file_size);
    if (engine->backend() != device->backend) {
      return fail(logger, kiln::invalid_argument(std::string("the engine was built for the ") +
                                                 kiln::backend_name(engine->backend()) +
                                                 " backend, but this run uses " + kiln::backend_name(device->backend) +
                                                 "; rebuild it with --device=" + kiln::backend_name(device->backend)));
    }
  }
  print_engine_io(*engine, engine_size, o.profile);
  if (Status st = check_io_formats(*engine, o); !st.ok()) return fail(logger, st);
  // With a profile in this run the layer information waits for it, to carry each layer's share of the time.
  auto layer_info = [&](const LayerProfiler* profile) -> Status {
    if (o.dump_layer_info) KILN_RETURN_IF_ERROR(print_layer_info(*engine, o.profiling_verbosity, profile));
    if (!o.export_layer_info.empty()) {
      KILN_ASSIGN_OR_RETURN(std::string json, layer_info_json(*engine, o.profiling_verbosity, profile));
      KILN_RETURN_IF_ERROR(write_file(o.export_layer_info, std::vector<uint8_t>(json.begin(), json.end()))
                               .with_context("--exportLayerInfo"));
    }
    return Status::Ok();
  };
  const bool profiled = !o.skip_inference && (o.dump_profile || !o.export_profile.empty());
  if (!profiled) {
    if (Status st = layer_info(nullptr); !st.ok()) return fail(logger, st);
  }
  if (o.skip_inference) {
    std::printf("Skipped inference (--skipInference)\n");
    return 0;
  }

  auto result = run_inference(*engine, o, logger);
  if (!result.ok()) return fail(logger, result.status());
  if (o.dump_output) dump_tensors(result->outputs);
  if (!o.export_output.empty()) {
    Status st = export_output(o.export_output, result->outputs);
    if (!st.ok()) return fail(logger, st);
  }
  if (!o.export_times.empty()) {
    Status st = export_times(o.export_times, result->timings);
    if (!st.ok()) return fail(logger, st);
  }
  print_performance_summary(*result, engine->backend(), o, logger);
  if (result->profile) {
    if (o.dump_profile) print_profile(*result->profile);
    if (!o.export_profile.empty()) {
      Status st = export_profile(o.export_profile, *result->profile);
      if (!st.ok()) return fail(logger, st);
    }
  }
  if (profiled) {
    if (Status st = layer_info(result->profile ? &*result->profile : nullptr); !st.ok()) return fail(logger, st);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 1 && std::string(argv[1]) == "compare") {
    const int rc = kiln::cli::compare_main(argc - 1, argv + 1);
    std::fflush(stdout);
    return rc;
  }
  auto parsed = kiln::cli::parse_options(argc, argv);
  if (!parsed.options) return parsed.exit_code;
  kiln::StderrLogger logger(parsed.options->verbose ? ILogger::Severity::kVERBOSE : ILogger::Severity::kINFO);
  const int rc = run(*parsed.options, logger);
  std::fflush(stdout);
  return rc;
}
