// PassManager: runs passes in order, verifying, dumping and timing each one.
#include "passes/pass_manager.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <set>
#include <sstream>

namespace kiln::passes {

std::vector<std::string> PassManager::pass_names() const {
  std::vector<std::string> r;
  for (auto& p : passes_) r.emplace_back(p->name());
  return r;
}

Status PassManager::run(ir::Graph& g, PassContext& ctx) {
  records_.clear();
  const std::string& dump = ctx.options.dump_after;
  if (!dump.empty() && dump != "all") {
    bool found = false;
    std::string names;
    for (auto& p : passes_) {
      found |= p->name() == dump;
      names += (names.empty() ? "" : ", ") + std::string(p->name());
    }
    // A typo would otherwise silently print nothing.
    if (!found)
      ctx.log(ILogger::Severity::kWARNING, "--dump-after: no pass named '" + dump + "' in this pipeline (passes: " +
                                               names + ")");
  }
  // KILN_DISABLE_PASSES=name,name: a diagnostic switch for bisecting a pass's effect on speed or results.
  std::set<std::string> disabled;
  if (const char* env = std::getenv("KILN_DISABLE_PASSES")) {
    std::stringstream list(env);
    for (std::string item; std::getline(list, item, ',');) {
      const size_t b = item.find_first_not_of(" \t"), e = item.find_last_not_of(" \t");
      if (b != std::string::npos) disabled.insert(item.substr(b, e - b + 1));
    }
  }
  const std::vector<std::string> names = pass_names();
  for (const std::string& d : disabled)
    if (std::find(names.begin(), names.end(), d) == names.end())
      ctx.log(ILogger::Severity::kWARNING, "KILN_DISABLE_PASSES: no pass named '" + d + "' in this pipeline");
  for (size_t index = 0; index < passes_.size(); ++index) {
    auto& pass = passes_[index];
    std::string name(pass->name());
    if (disabled.count(name)) {
      // The progress hooks still see the step, so a monitor's count of passes stays whole.
      ctx.log(ILogger::Severity::kWARNING, "pass " + name + " disabled by KILN_DISABLE_PASSES");
      if (hooks_.before) hooks_.before(index, name);
      if (hooks_.after && !hooks_.after(index, name, true))
        return invalid_argument("the build was cancelled by its progress monitor after pass '" + name + "'");
      continue;
    }
    ctx.changes = 0;
    if (hooks_.before) hooks_.before(index, name);
    auto t0 = std::chrono::steady_clock::now();
    Status st = pass->apply(g, ctx);
    double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    const bool go_on = !hooks_.after || hooks_.after(index, name, st.ok());
    if (!st.ok()) return st.with_context("pass '" + name + "'");
    if (!go_on) return invalid_argument("the build was cancelled by its progress monitor after pass '" + name + "'");
    records_.push_back({name, ctx.changes, ms});
    char line[256];
    std::snprintf(line, sizeof line, "pass %-24s %5d changes %9.3f ms  (%zu nodes)", name.c_str(), ctx.changes, ms,
                  g.nodes().size());
    ctx.verbose(line);
    if (dump == "all" || dump == name) ctx.log(ILogger::Severity::kINFO, "graph after pass '" + name + "':\n" + ir::print(g));
    if (ctx.options.verify_each) {
      Status v = ir::verify(g);
      if (!v.ok()) return v.with_context("graph is invalid after pass '" + name + "'");
    }
  }
  return Status::Ok();
}

}  // namespace kiln::passes
