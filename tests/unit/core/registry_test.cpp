#include <gtest/gtest.h>

#include "core/registry.h"

namespace aln {
namespace {

struct Shape {
  virtual ~Shape() = default;
  virtual double area() const = 0;
};
struct Square : Shape {
  explicit Square(double s) : side(s) {}
  double area() const override { return side * side; }
  double side;
};

TEST(Registry, CreatesRegisteredPlugins) {
  Registry<Shape, double> registry("shape");
  ASSERT_TRUE(registry.add("square", [](double s) { return std::make_unique<Square>(s); }, "a square").ok());
  auto made = registry.create("square", 3.0);
  ASSERT_TRUE(made.ok());
  EXPECT_DOUBLE_EQ((*made)->area(), 9.0);
  EXPECT_EQ(registry.names(), std::vector<std::string>{"square"});
  EXPECT_EQ(registry.description("square"), "a square");
}

TEST(Registry, UnknownNameListsKnownOnes) {
  Registry<Shape, double> registry("shape");
  ASSERT_TRUE(registry.add("square", [](double s) { return std::make_unique<Square>(s); }).ok());
  auto made = registry.create("circle", 1.0);
  EXPECT_EQ(made.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(made.status().message(), "unknown shape 'circle'; known: square");
}

TEST(Registry, DuplicateIsAnError) {
  Registry<Shape, double> registry("shape");
  auto factory = [](double s) { return std::make_unique<Square>(s); };
  ASSERT_TRUE(registry.add("square", factory).ok());
  EXPECT_EQ(registry.add("square", factory).code(), absl::StatusCode::kAlreadyExists);
}

}  // namespace
}  // namespace aln
