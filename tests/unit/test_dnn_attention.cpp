// FusedAttention's cuDNN tactic (src/backends/cuda/dnn_attention.h) without a GPU: which problems are offered it
// (element type, head dims, strides, mask shapes, the KILN_DNN_SDPA switch), where it goes in the tactic list, and
// the dims/strides handed to cuDNN for the packed and separate layouts, checked element by element against the
// layouts' own definition; the key a stored plan is valid for, its base64 text (RFC 4648's vectors) and the
// KILN_DNN_SDPA_STORE switch.
#include <gtest/gtest.h>

#include <cstdlib>
#include <random>
#include <set>

#include "backends/cuda/dnn_attention.h"

namespace kiln::cuda {
namespace {

Attributes layouts(const std::string& qkv, const std::string& out) {
  Attributes a;
  a.set("qkv_layout", Attribute(qkv));
  a.set("out_layout", Attribute(out));
  return a;
}

// bert-base-like: B x H x S x D, separate [B,H,S,D] operands.
DnnSdpaSpec separate(DataType dt, int64_t B, int64_t H, int64_t S, int64_t D, Dims mask = {}) {
  const Dims q = {B, H, S, D};
  auto g = ops::attention_geometry(layouts("bhsd", "bhsd"), q, &q, &q);
  EXPECT_TRUE(g.ok()) << g.status().message();
  return dnn_sdpa_spec(*g, dt, mask, 0.125f, false);
}

TEST(DnnSdpa, TacticNameIsStable) { EXPECT_STREQ(kDnnSdpaTactic, "cudnn_sdpa"); }

TEST(DnnSdpa, OfferedForHalfAndBf16Only) {
  EXPECT_EQ(dnn_sdpa_declined(separate(DataType::kHALF, 2, 12, 128, 64)), "");
  EXPECT_EQ(dnn_sdpa_declined(separate(DataType::kBF16, 2, 12, 128, 64)), "");
  EXPECT_NE(dnn_sdpa_declined(separate(DataType::kFLOAT, 2, 12, 128, 64)), "");
  EXPECT_NE(dnn_sdpa_declined(separate(DataType::kDOUBLE, 2, 12, 128, 64)), "");
}

TEST(DnnSdpa, HeadDimsMultiplesOf8UpTo128) {
  for (int64_t d : {8, 32, 64, 80, 96, 128})
    EXPECT_EQ(dnn_sdpa_declined(separate(DataType::kHALF, 1, 2, 50, d)), "") << d;
  for (int64_t d : {4, 36, 60, 136, 256}) EXPECT_NE(dnn_sdpa_declined(separate(DataType::kHALF, 1, 2, 50, d)), "") << d;
  DnnSdpaSpec s = separate(DataType::kHALF, 1, 2, 50, 64);
  s.Dv = 72;  // different V head dim, still a multiple of 8
  EXPECT_EQ(dnn_sdpa_declined(s), "");
  s.Dv = 70;
  EXPECT_NE(dnn_sdpa_declined(s), "");
}

TEST(DnnSdpa, EmptyProblemsAndUnalignedStridesDeclined) {
  EXPECT_NE(dnn_sdpa_declined(separate(DataType::kHALF, 0, 2, 50, 64)), "");
  EXPECT_NE(dnn_sdpa_declined(separate(DataType::kHALF, 2, 2, 0, 64)), "");
  DnnSdpaSpec s = separate(DataType::kHALF, 2, 2, 50, 64);
  s.ks[2] = 68;  // rows not 16-byte aligned
  EXPECT_NE(dnn_sdpa_declined(s), "");
  s = separate(DataType::kHALF, 2, 2, 50, 64);
  s.os[0] = 2 * 50 * 64 + 4;
  EXPECT_NE(dnn_sdpa_declined(s), "");
}

TEST(DnnSdpa, MaskShapes) {
  const int64_t B = 2, H = 3, S = 128;
  // Padding ([B,1,1,Sk]), per-head and shared full masks: offered.
  for (const Dims& m : {Dims{B, 1, 1, S}, Dims{1, 1, S, S}, Dims{B, 1, S, S}, Dims{B, H, S, S}, Dims{1, H, 1, S},
                        Dims{1, 1, 1, S}})
    EXPECT_EQ(dnn_sdpa_declined(separate(DataType::kHALF, B, H, S, 64, m)), "") << dims_to_string(m);
  // Broadcast along the keys, not broadcasting at all, or not rank 4: declined.
  for (const Dims& m : {Dims{B, 1, S, 1}, Dims{B, 1, 1, 1}, Dims{3, 1, 1, S}, Dims{B, 1, 1, S - 1}, Dims{B, S},
                        Dims{1, B, 1, 1, S}})
    EXPECT_NE(dnn_sdpa_declined(separate(DataType::kHALF, B, H, S, 64, m)), "") << dims_to_string(m);
}

TEST(DnnSdpa, SwitchWithdrawsTheTactic) {
  const char* old = std::getenv("KILN_DNN_SDPA");
  const std::string saved = old ? old : "";
  unsetenv("KILN_DNN_SDPA");
  EXPECT_TRUE(dnn_sdpa_enabled());
  setenv("KILN_DNN_SDPA", "0", 1);
  EXPECT_FALSE(dnn_sdpa_enabled());
  setenv("KILN_DNN_SDPA", "1", 1);
  EXPECT_TRUE(dnn_sdpa_enabled());
  if (old)
    setenv("KILN_DNN_SDPA", saved.c_str(), 1);
  else
    unsetenv("KILN_DNN_SDPA");
}

TEST(DnnSdpa, TacticListKeepsOurDefaultFirst) {
  const std::vector<std::string> own = {"kiln_attn_mma_w4", "kiln_attn_mma_w1", "kiln_attn_mma_w2"};
  EXPECT_EQ(merge_attention_tactics(own, true),
            (std::vector<std::string>{"kiln_attn_mma_w4", "cudnn_sdpa", "kiln_attn_mma_w1", "kiln_attn_mma_w2"}));
  EXPECT_EQ(merge_attention_tactics(own, false), own);
  EXPECT_EQ(merge_attention_tactics({"kiln_attn_mma_w1"}, true),
            (std::vector<std::string>{"kiln_attn_mma_w1", "cudnn_sdpa"}));
  // No tactics of ours (the generic kernel): nothing to time cuDNN against, so nothing is offered.
  EXPECT_TRUE(merge_attention_tactics({}, true).empty());
}

// Offset of element (b, h, s, d) in a [B,H,S,D] tensor described by t (dims and strides as handed to cuDNN).
int64_t at(const DnnSdpaTensor& t, int64_t b, int64_t h, int64_t s, int64_t d) {
  return b * t.strides[0] + h * t.strides[1] + s * t.strides[2] + d * t.strides[3];
}

// The packed projection [B,S,3,H,D] (vit/gpt2: qkv_layout bs3hd) into a [B,S,H,D] output: each of Q, K, V read
// from its third of every token's row, starting at the geometry's offset (which the layer adds to the pointer).
TEST(DnnSdpa, PackedLayoutDimsAndStrides) {
  const int64_t B = 3, S = 197, H = 12, D = 64;
  auto g = ops::attention_geometry(layouts("bs3hd", "bshd"), {B, S, 3, H, D}, nullptr, nullptr);
  ASSERT_TRUE(g.ok()) << g.status().message();
  const DnnSdpaSpec s = dnn_sdpa_spec(*g, DataType::kHALF, {}, 0.125f, true);
  EXPECT_EQ(dnn_sdpa_declined(s), "");
  EXPECT_TRUE(s.causal);
  EXPECT_FLOAT_EQ(s.scale, 0.125f);
  const DnnSdpaLayout l = dnn_sdpa_layout(s);
  EXPECT_FALSE(l.has_bias);
  for (const DnnSdpaTensor* t : {&l.q, &l.k, &l.v, &l.o}) {
    EXPECT_EQ(t->dims[0], B);
    EXPECT_EQ(t->dims[1], H);
    EXPECT_EQ(t->dims[2], S);
    EXPECT_EQ(t->dims[3], D);
    EXPECT_EQ(t->strides[3], 1);
  }
  const int64_t offs[3] = {g->q.offset, g->k.offset, g->v.offset};
  const DnnSdpaTensor* in[3] = {&l.q, &l.k, &l.v};
  std::mt19937 rng(7);
  for (int i = 0; i < 200; ++i) {
    const int64_t b = rng() % B, h = rng() % H, t = rng() % S, d = rng() % D;
    for (int which = 0; which < 3; ++which)
      EXPECT_EQ(offs[which] + at(*in[which], b, h, t, d), (((b * S + t) * 3 + which) * H + h) * D + d);
    EXPECT_EQ(at(l.o, b, h, t, d), ((b * S + t) * H + h) * D + d);
  }
}

// Separate Q, K, V in [B,S,H,D] (bshd) with fewer queries than keys, into a [B,H,Sq,D] output, with a padding mask.
TEST(DnnSdpa, SeparateLayoutDimsStridesAndMask) {
  const int64_t B = 2, Sq = 50, Sk = 136, H = 4, D = 32;
  const Dims q = {B, Sq, H, D}, kv = {B, Sk, H, D};
  auto g = ops::attention_geometry(layouts("bshd", "bhsd"), q, &kv, &kv);
  ASSERT_TRUE(g.ok()) << g.status().message();
  const DnnSdpaSpec s = dnn_sdpa_spec(*g, DataType::kBF16, {B, 1, 1, Sk}, 0.25f, false);
  EXPECT_EQ(dnn_sdpa_declined(s), "");
  const DnnSdpaLayout l = dnn_sdpa_layout(s);
  EXPECT_EQ(l.q.dims[2], Sq);
  EXPECT_EQ(l.k.dims[2], Sk);
  EXPECT_EQ(l.v.dims[2], Sk);
  EXPECT_EQ(l.o.dims[2], Sq);
  EXPECT_EQ(g->q.offset + g->k.offset + g->v.offset, 0);
  std::mt19937 rng(11);
  for (int i = 0; i < 200; ++i) {
    const int64_t b = rng() % B, h = rng() % H, tq = rng() % Sq, tk = rng() % Sk, d = rng() % D;
    EXPECT_EQ(at(l.q, b, h, tq, d), ((b * Sq + tq) * H + h) * D + d);
    EXPECT_EQ(at(l.k, b, h, tk, d), ((b * Sk + tk) * H + h) * D + d);
    EXPECT_EQ(at(l.v, b, h, tk, d), ((b * Sk + tk) * H + h) * D + d);
    EXPECT_EQ(at(l.o, b, h, tq, d), ((b * H + h) * Sq + tq) * D + d);
  }
  // The mask as stored: [B,1,1,Sk], dense; cuDNN broadcasts its size-1 dims.
  ASSERT_TRUE(l.has_bias);
  EXPECT_EQ((std::vector<int64_t>(l.bias.dims, l.bias.dims + 4)), (std::vector<int64_t>{B, 1, 1, Sk}));
  EXPECT_EQ(l.bias.strides[3], 1);
  EXPECT_EQ(l.bias.strides[0], Sk);
  // A full per-head mask [B,H,Sq,Sk]: element (b,h,i,j) at ((b*H + h)*Sq + i)*Sk + j.
  const DnnSdpaLayout f = dnn_sdpa_layout(dnn_sdpa_spec(*g, DataType::kBF16, {B, H, Sq, Sk}, 0.25f, false));
  for (int i = 0; i < 50; ++i) {
    const int64_t b = rng() % B, h = rng() % H, tq = rng() % Sq, tk = rng() % Sk;
    EXPECT_EQ(at(f.bias, b, h, tq, tk), ((b * H + h) * Sq + tq) * Sk + tk);
  }
}

// Grouped-query K/V ([B,Sk,Hk,D], bshd) with 8 query heads and 2 K/V heads: K and V go to cuDNN with their own
// head count (cuDNN maps query head h to K/V head h / (H / Hk), as FusedAttention does); the key says so; a K/V
// head count that does not divide H is declined.
TEST(DnnSdpa, GroupedKvDimsStridesAndKey) {
  const int64_t B = 2, S = 64, H = 8, Hk = 2, D = 64;
  const Dims q = {B, S, H, D}, kv = {B, S, Hk, D};
  auto g = ops::attention_geometry(layouts("bshd", "bshd"), q, &kv, &kv);
  ASSERT_TRUE(g.ok()) << g.status().message();
  const DnnSdpaSpec s = dnn_sdpa_spec(*g, DataType::kHALF, {}, 0.125f, true);
  EXPECT_EQ(s.H, H);
  EXPECT_EQ(s.Hk, Hk);
  EXPECT_EQ(dnn_sdpa_declined(s), "");
  const DnnSdpaLayout l = dnn_sdpa_layout(s);
  EXPECT_EQ(l.q.dims[1], H);
  EXPECT_EQ(l.o.dims[1], H);
  EXPECT_EQ(l.k.dims[1], Hk);
  EXPECT_EQ(l.v.dims[1], Hk);
  std::mt19937 rng(13);
  for (int i = 0; i < 200; ++i) {
    const int64_t b = rng() % B, hk = rng() % Hk, t = rng() % S, d = rng() % D;
    EXPECT_EQ(at(l.k, b, hk, t, d), ((b * S + t) * Hk + hk) * D + d);
    EXPECT_EQ(at(l.v, b, hk, t, d), ((b * S + t) * Hk + hk) * D + d);
  }
  EXPECT_NE(dnn_sdpa_problem_key(s).find("kv_heads 2"), std::string::npos) << dnn_sdpa_problem_key(s);
  DnnSdpaSpec four = s;
  four.Hk = 4;
  EXPECT_NE(dnn_sdpa_problem_key(four), dnn_sdpa_problem_key(s));
  DnnSdpaSpec three = s;
  three.Hk = 3;
  EXPECT_NE(dnn_sdpa_declined(three), "");
  // Plain multi-head attention keeps the key it had before K/V head counts existed.
  EXPECT_EQ(dnn_sdpa_problem_key(separate(DataType::kHALF, 2, 12, 128, 64)).find("kv_heads"), std::string::npos);
}

// A stored plan's key (dnn_sdpa_plan_key): the tactic, then the problem, then where it was compiled. Every part of
// the problem cuDNN's graph is built from changes it (a stored plan also carries the scale as a constant); a key of
// the same problem from another cuDNN or GPU still starts with dnn_sdpa_plan_key(s, "") (attention_ops.cpp logs
// that case louder than other shapes).
TEST(DnnSdpa, StoredPlanKeys) {
  const DnnSdpaSpec base = separate(DataType::kHALF, 2, 12, 128, 64, {2, 1, 1, 128});
  const std::string here = "cudnn 91400 | NVIDIA H200 sm_90 132 SMs";
  const std::string k = dnn_sdpa_plan_key(base, here);
  EXPECT_EQ(k, "cudnn_sdpa | " + dnn_sdpa_problem_key(base) + " | " + here);
  EXPECT_EQ(k, dnn_sdpa_plan_key(separate(DataType::kHALF, 2, 12, 128, 64, {2, 1, 1, 128}), here));
  std::vector<DnnSdpaSpec> v(17, base);
  v[0].dt = DataType::kBF16;
  v[1].B = 4;
  v[2].H = 16;
  v[3].Sq = 64;
  v[4].Sk = 256;
  v[5].D = 128;
  v[6].Dv = 32;
  v[7].qs[2] = 3 * 64;
  v[8].ks[1] = 64 * 256;
  v[9].vs[0] = 12 * 128 * 64 + 8;
  v[10].os[2] = 12 * 64;
  v[11].mask = {};
  v[12].mask = {2, 12, 128, 128};
  v[13].mask = {1, 1, 1, 128};
  v[14].causal = true;
  v[15].scale = 0.125f * (1.0f + 1.0f / (1 << 20));  // one float step away: to_string's 6 decimals would miss it
  v[16].scale = 0.25f;
  std::set<std::string> keys = {k};
  for (const DnnSdpaSpec& s : v) keys.insert(dnn_sdpa_plan_key(s, here));
  EXPECT_EQ(keys.size(), v.size() + 1);
  EXPECT_NE(k, dnn_sdpa_plan_key(base, "cudnn 91000 | NVIDIA H100 sm_90 132 SMs"));
  EXPECT_NE(k, dnn_sdpa_plan_key(base, "cudnn 91400 | NVIDIA H100 sm_90 114 SMs"));
  EXPECT_EQ(dnn_sdpa_plan_key(base, "cudnn 1 | another GPU").rfind(dnn_sdpa_plan_key(base, ""), 0), 0u);
  for (const DnnSdpaSpec& s : v) EXPECT_NE(dnn_sdpa_plan_key(s, here).rfind(dnn_sdpa_plan_key(base, ""), 0), 0u);
}

std::vector<uint8_t> bytes_of(const std::string& s) { return std::vector<uint8_t>(s.begin(), s.end()); }

// The plan's text form is base64: RFC 4648's test vectors both ways, a round trip of random bytes of every length
// up to 64 (and one large), and text it cannot have written rejected.
TEST(DnnSdpa, StoredPlanTextIsBase64) {
  const std::pair<const char*, const char*> rfc4648[] = {{"", ""},
                                                         {"f", "Zg=="},
                                                         {"fo", "Zm8="},
                                                         {"foo", "Zm9v"},
                                                         {"foob", "Zm9vYg=="},
                                                         {"fooba", "Zm9vYmE="},
                                                         {"foobar", "Zm9vYmFy"}};
  for (const auto& [raw, text] : rfc4648) {
    EXPECT_EQ(dnn_plan_to_text(bytes_of(raw)), text) << raw;
    std::vector<uint8_t> back = {1, 2, 3};
    EXPECT_TRUE(dnn_plan_from_text(text, &back)) << text;
    EXPECT_EQ(back, bytes_of(raw)) << text;
  }
  std::mt19937 rng(5);
  std::vector<size_t> sizes;
  for (size_t n = 0; n <= 64; ++n) sizes.push_back(n);
  sizes.push_back(300001);
  for (size_t n : sizes) {
    std::vector<uint8_t> raw(n);
    for (uint8_t& b : raw) b = static_cast<uint8_t>(rng());
    const std::string text = dnn_plan_to_text(raw);
    EXPECT_EQ(text.size(), (n + 2) / 3 * 4);
    std::vector<uint8_t> back;
    ASSERT_TRUE(dnn_plan_from_text(text, &back)) << n;
    EXPECT_EQ(back, raw) << n;
  }
  // Every byte value survives (the UBJSON holds binary).
  std::vector<uint8_t> all(256);
  for (int i = 0; i < 256; ++i) all[i] = static_cast<uint8_t>(i);
  std::vector<uint8_t> back;
  ASSERT_TRUE(dnn_plan_from_text(dnn_plan_to_text(all), &back));
  EXPECT_EQ(back, all);
  // Wrong length, characters outside the alphabet, padding inside, or padding bits set.
  for (const char* bad : {"Zg=", "Zm9vY", "{not a plan", "Zm9v Zg==", "Zm9v\nZg==", "Zg==Zm9v", "Z===", "Zm=v",
                          "Zh==", "Zm9=", "Zm-v", "Zm_v"}) {
    std::vector<uint8_t> out;
    EXPECT_FALSE(dnn_plan_from_text(bad, &out)) << bad;
  }
}

// Storing SDPA plans waits for a GPU run: only KILN_DNN_SDPA_STORE=1 turns it on.
TEST(DnnSdpa, StoreSwitchIsOffUnlessSetTo1) {
  const char* old = std::getenv("KILN_DNN_SDPA_STORE");
  const std::string saved = old ? old : "";
  unsetenv("KILN_DNN_SDPA_STORE");
  EXPECT_FALSE(dnn_sdpa_store_enabled());
  for (const char* v : {"0", "", "yes", "true", "2"}) {
    setenv("KILN_DNN_SDPA_STORE", v, 1);
    EXPECT_FALSE(dnn_sdpa_store_enabled()) << v;
  }
  setenv("KILN_DNN_SDPA_STORE", "1", 1);
  EXPECT_TRUE(dnn_sdpa_store_enabled());
  if (old)
    setenv("KILN_DNN_SDPA_STORE", saved.c_str(), 1);
  else
    unsetenv("KILN_DNN_SDPA_STORE");
}

}  // namespace
}  // namespace kiln::cuda
