// Checks of the builder's opt-in switches from the environment (builder.cpp: env_switch): a build with the variable
// at 0 or 1 succeeds, and any other value stops it with a message that names the variable and the value.
#pragma once

#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include "kiln/builder.h"
#include "kiln/network.h"

namespace kiln::test {

inline void expect_env_switch_takes_0_or_1(const char* name) {
  Builder b;
  auto net = b.create_network();
  ITensor* x = net->add_input("x", DataType::kFLOAT, {2, 3});
  auto y = net->add_op("Relu", {x});
  ASSERT_EQ(y.size(), 1u);
  ASSERT_TRUE(net->mark_output(y[0]).ok());
  auto config = b.create_builder_config();
  for (const char* v : {"yes", "true", "2", ""}) {
    SCOPED_TRACE(std::string(name) + "=" + v);
    ASSERT_EQ(setenv(name, v, 1), 0);
    auto engine = b.build_serialized_network(*net, *config);
    unsetenv(name);
    ASSERT_FALSE(engine.ok());
    EXPECT_NE(engine.status().message().find(std::string(name) + " must be 0 or 1, got '" + v + "'"),
              std::string::npos)
        << engine.status().message();
  }
  for (const char* v : {"0", "1"}) {
    ASSERT_EQ(setenv(name, v, 1), 0);
    auto engine = b.build_serialized_network(*net, *config);
    unsetenv(name);
    EXPECT_TRUE(engine.ok()) << name << "=" << v << ": " << engine.status().message();
  }
}

}  // namespace kiln::test
