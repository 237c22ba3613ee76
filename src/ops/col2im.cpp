// Col2Im (opset 18): sums sliding-block columns back into an N-D image, the inverse layout of im2col.
#include "ops/op_util.h"

namespace kiln::ops {
namespace {

struct Col2ImParams {
  std::vector<int64_t> dilations, pads, strides;  // pads: all begins, then all ends
};

Result<Col2ImParams> col2im_params(const Attributes& attrs, size_t n) {
  Col2ImParams p;
  KILN_ASSIGN_OR_RETURN(p.dilations, attrs.get_ints("dilations", std::vector<int64_t>(n, 1)));
  KILN_ASSIGN_OR_RETURN(p.strides, attrs.get_ints("strides", std::vector<int64_t>(n, 1)));
  KILN_ASSIGN_OR_RETURN(p.pads, attrs.get_ints("pads", std::vector<int64_t>(2 * n, 0)));
  if (p.dilations.size() != n || p.strides.size() != n || p.pads.size() != 2 * n)
    return invalid_model("Col2Im: dilations and strides need " + std::to_string(n) + " entries and pads " +
                         std::to_string(2 * n) + " for " + std::to_string(n) + " spatial dimensions");
  for (size_t i = 0; i < n; ++i) {
    if (p.dilations[i] <= 0 || p.strides[i] <= 0) return invalid_model("Col2Im: dilations and strides must be positive");
    if (p.pads[i] < 0 || p.pads[i + n] < 0) return invalid_model("Col2Im: pads must be non-negative");
  }
  return p;
}

// Number of block positions along one axis of the padded image.
int64_t block_count(int64_t image, int64_t block, int64_t dil, int64_t stride, int64_t pad_sum) {
  const int64_t span = dil * (block - 1) + 1;
  return (image + pad_sum - span) / stride + 1;
}

template <typename T>
void col2im(const T* in, T* out, int64_t batch, int64_t channels, const std::vector<int64_t>& image,
            const std::vector<int64_t>& block, const std::vector<int64_t>& grid, const Col2ImParams& p) {
  using C = std::conditional_t<std::is_same_v<T, Half> || std::is_same_v<T, BFloat16>, float, T>;
  const size_t n = image.size();
  const int64_t k_total = product(block), l_total = product(grid), img_total = product(image);
  std::vector<C> acc(static_cast<size_t>(img_total));
  std::vector<int64_t> k_idx(n), l_idx(n);
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t c = 0; c < channels; ++c) {
      std::fill(acc.begin(), acc.end(), C(0));
      std::fill(k_idx.begin(), k_idx.end(), 0);
      for (int64_t k = 0; k < k_total; ++k) {
        const T* row = in + ((b * channels + c) * k_total + k) * l_total;
        std::fill(l_idx.begin(), l_idx.end(), 0);
        for (int64_t l = 0; l < l_total; ++l) {
          int64_t flat = 0;
          bool inside = true;
          for (size_t d = 0; d < n && inside; ++d) {
            const int64_t pos = l_idx[d] * p.strides[d] + k_idx[d] * p.dilations[d] - p.pads[d];
            inside = pos >= 0 && pos < image[d];
            flat = flat * image[d] + pos;
          }
          if (inside) acc[flat] += static_cast<C>(row[l]);
          for (int d = static_cast<int>(n) - 1; d >= 0; --d) {
            if (++l_idx[d] < grid[d]) break;
            l_idx[d] = 0;
          }
        }
        for (int d = static_cast<int>(n) - 1; d >= 0; --d) {
          if (++k_idx[d] < block[d]) break;
          k_idx[d] = 0;
        }
      }
      T* dst = out + (b * channels + c) * img_total;
      for (int64_t i = 0; i < img_total; ++i) dst[i] = static_cast<T>(acc[i]);
    }
  }
}

}  // namespace

KILN_REGISTER_OP(Col2Im) {
  OpSchema s;
  s.name = "Col2Im";
  s.since_opset = 18;
  s.min_inputs = s.max_inputs = 3;  // input, image_shape, block_shape
  s.attrs = {{"dilations", AttrType::kINTS}, {"pads", AttrType::kINTS}, {"strides", AttrType::kINTS}};
  s.dtypes = float_types();
  s.infer = [](InferContext& ctx) {
    const TensorInfo& x = ctx.input(0);
    TensorInfo& out = ctx.output(0);
    out = TensorInfo{};
    out.dtype = x.dtype;
    if (x.rank_known && x.shape.size() != 3)
      return invalid_model("Col2Im: input must have shape [N, C*prod(block_shape), L] but has " + shape_to_string(x.shape));
    auto image = known_values(ctx.input(1));
    auto block = known_static_values(ctx.input(2));
    std::optional<size_t> n;
    if (image) n = image->size();
    else if (block) n = block->size();
    else if (ctx.input(1).rank_known && ctx.input(1).shape.size() == 1 && ctx.input(1).shape[0].is_static())
      n = static_cast<size_t>(ctx.input(1).shape[0].value);
    if (!n) { out.rank_known = false; return Status::Ok(); }
    KILN_RETURN_IF_ERROR(col2im_params(ctx.attrs(), *n).status());
    if (block && block->size() != *n)
      return invalid_model("Col2Im: image_shape and block_shape must have the same length");
    Dim batch = x.rank_known ? x.shape[0] : ctx.fresh_dim();
    Dim channels = ctx.fresh_dim();
    if (x.rank_known && x.shape[1].is_static() && block) {
      const int64_t k = product(*block);
      if (k <= 0 || x.shape[1].value % k != 0)
        return invalid_model("Col2Im: input dimension 1 (" + std::to_string(x.shape[1].value) +
                             ") is not a multiple of the block size " + std::to_string(k));
      channels = Dim(x.shape[1].value / k);
    }
    out.shape = {batch, channels};
    for (size_t i = 0; i < *n; ++i) out.shape.push_back(image ? (*image)[i] : ctx.fresh_dim());
    return Status::Ok();
  };
  s.compute = [](ComputeContext& ctx) {
    const Tensor& x = ctx.input(0);
    if (x.rank() != 3)
      return invalid_argument("Col2Im: input must have shape [N, C*prod(block_shape), L] but has " + dims_to_string(x.shape()));
    KILN_ASSIGN_OR_RETURN(std::vector<int64_t> image, tensor_to_ints(ctx.input(1)));
    KILN_ASSIGN_OR_RETURN(std::vector<int64_t> block, tensor_to_ints(ctx.input(2)));
    if (image.size() != block.size() || image.empty())
      return invalid_argument("Col2Im: image_shape and block_shape must be non-empty and of the same length");
    const size_t n = image.size();
    KILN_ASSIGN_OR_RETURN(Col2ImParams p, col2im_params(ctx.attrs(), n));
    std::vector<int64_t> grid(n);
    for (size_t d = 0; d < n; ++d) {
      if (image[d] <= 0 || block[d] <= 0) return invalid_argument("Col2Im: image_shape and block_shape must be positive");
      grid[d] = block_count(image[d], block[d], p.dilations[d], p.strides[d], p.pads[d] + p.pads[d + n]);
      if (grid[d] <= 0) return invalid_argument("Col2Im: block does not fit the padded image along axis " + std::to_string(d));
    }
    const int64_t k = product(block);
    if (x.dim(1) % k != 0)
      return invalid_argument("Col2Im: input dimension 1 (" + std::to_string(x.dim(1)) +
                              ") is not a multiple of the block size " + std::to_string(k));
    if (x.dim(2) != product(grid))
      return invalid_argument("Col2Im: input dimension 2 is " + std::to_string(x.dim(2)) + " but the blocks give " +
                              std::to_string(product(grid)));
    const int64_t channels = x.dim(1) / k;
    std::vector<int64_t> out_dims = {x.dim(0), channels};
    out_dims.insert(out_dims.end(), image.begin(), image.end());
    Tensor& out = ctx.allocate_output(0, x.dtype(), out_dims);
    KILN_DISPATCH_FLOAT_TYPES(x.dtype(), "Col2Im",
                              col2im<scalar_t>(x.data<scalar_t>(), out.data<scalar_t>(), x.dim(0), channels, image,
                                               block, grid, p));
    return Status::Ok();
  };
  return s;
}

}  // namespace kiln::ops
