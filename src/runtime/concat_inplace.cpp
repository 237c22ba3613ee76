// In-place Concat planning (see concat_inplace.h).
#include "runtime/concat_inplace.h"

#include <algorithm>

namespace kiln::runtime {

std::vector<InPlaceConcat> plan_inplace_concats(const EnginePlan& plan, const std::vector<Dims>& dims,
                                                const std::vector<bool>& device_writer,
                                                const std::vector<bool>& host_known) {
  const size_t nv = plan.values.size();
  std::vector<InPlaceConcat> r;
  if (dims.size() != nv || host_known.size() != nv || device_writer.size() != plan.nodes.size()) return r;
  std::vector<int> writer(nv, -1);
  for (size_t i = 0; i < plan.nodes.size(); ++i)
    for (int o : plan.nodes[i].outputs)
      if (o >= 0) writer[o] = static_cast<int>(i);
  std::vector<bool> is_io(nv, false), slice(nv, false);  // slice: placed inside an eliminated concat's output
  std::vector<int> decided(nv, -1);  // per value: the index into r of the eliminated concat it is the output of
  for (const auto& io : plan.io) is_io[io.value] = true;

  for (size_t idx = 0; idx < plan.nodes.size(); ++idx) {
    const PlanNode& n = plan.nodes[idx];
    if (n.op_type != "Concat" || !(n.domain.empty() || n.domain == "ai.onnx") || !device_writer[idx]) continue;
    const Attribute* mark = n.attrs.find(kInPlaceAttr);
    if (!mark || mark->type() != AttrType::kINT || mark->i() != 1) continue;
    if (n.outputs.size() != 1 || n.outputs[0] < 0 || n.inputs.empty()) continue;
    const int out = n.outputs[0];
    if (host_known[out] || slice[out] || decided[out] >= 0) continue;
    const Dims& od = dims[out];
    const int64_t rank = static_cast<int64_t>(od.size());
    auto axis_attr = n.attrs.get_int("axis");
    if (rank == 0 || !axis_attr.ok()) continue;
    const int64_t axis = *axis_attr < 0 ? *axis_attr + rank : *axis_attr;
    if (axis < 0 || axis >= rank) continue;
    // Contiguous slices: nothing outside the axis varies slower than it.
    int64_t outer = 1;
    for (int64_t d = 0; d < axis; ++d) outer *= od[d];
    if (outer != 1) continue;
    const DataType dt = plan.values[out].dtype;
    const uint64_t esize = dtype_size(dt);
    InPlaceConcat c;
    c.node = static_cast<int>(idx);
    c.output = out;
    c.first_writer = static_cast<int>(idx);
    uint64_t offset = 0;
    bool ok = true;
    for (int id : n.inputs) {
      const int w = id >= 0 ? writer[id] : -1;
      ok = id >= 0 && !is_io[id] && !plan.values[id].constant.defined() && !host_known[id] && !slice[id] &&
           plan.values[id].dtype == dt && w >= 0 && w < static_cast<int>(idx) && device_writer[w] &&
           offset % kSliceAlignment == 0 && volume(dims[id]) >= 0;
      for (const auto& s : c.slices) ok = ok && s.first != id;
      if (!ok) break;
      c.slices.emplace_back(id, offset);
      // A nested concat's output is first written by its own earliest writer, not by the (skipped) concat.
      c.first_writer = std::min(c.first_writer, decided[id] >= 0 ? r[decided[id]].first_writer : w);
      offset += static_cast<uint64_t>(volume(dims[id])) * esize;
    }
    // The inputs must tile the output exactly (shape inference guarantees it; a corrupt plan must not overrun).
    if (!ok || volume(od) < 0 || offset != static_cast<uint64_t>(volume(od)) * esize) continue;
    decided[out] = static_cast<int>(r.size());
    for (const auto& s : c.slices) slice[s.first] = true;
    r.push_back(std::move(c));
  }
  // Roots, outermost first: a concat nested in r[i] comes before it in r.
  std::vector<std::pair<int, uint64_t>> in_outer(nv, {-1, 0});  // per value: (index into r, offset) of its slot
  for (size_t i = 0; i < r.size(); ++i)
    for (const auto& [v, offset] : r[i].slices) in_outer[v] = {static_cast<int>(i), offset};
  for (size_t i = r.size(); i-- > 0;) {
    const auto [outer, offset] = in_outer[r[i].output];
    r[i].root = outer < 0 ? r[i].output : r[outer].root;
    r[i].root_offset = outer < 0 ? 0 : r[outer].root_offset + offset;
  }
  return r;
}

}  // namespace kiln::runtime
