// safetensors: round trips of every dtype, and one test per kind of malformed file.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <filesystem>
#include <fstream>

#include "core/model/safetensors.h"

namespace aln::model {
namespace {

std::string temp(const std::string& name) {
  const auto dir = std::filesystem::temp_directory_path() / "aln_safetensors_test";
  std::filesystem::create_directories(dir);
  return (dir / name).string();
}

// A file with the given header JSON and `data_bytes` zero bytes of data.
std::string raw_file(const std::string& name, const std::string& header, size_t data_bytes, int64_t declared = -1) {
  const std::string path = temp(name);
  std::ofstream out(path, std::ios::binary);
  uint64_t n = declared >= 0 ? static_cast<uint64_t>(declared) : header.size();
  for (int k = 0; k < 8; ++k) out.put(static_cast<char>((n >> (8 * k)) & 0xFF));
  out << header << std::string(data_bytes, '\0');
  return path;
}

std::string error_of(const std::string& path) {
  auto f = load_safetensors(path);
  EXPECT_FALSE(f.ok()) << path;
  return f.ok() ? "" : std::string(f.status().message());
}

TEST(Safetensors, RoundTripsEveryDtype) {
  std::map<std::string, at::Tensor> tensors;
  for (auto t : {at::kDouble, at::kFloat, at::kHalf, at::kBFloat16, at::kLong, at::kInt, at::kShort, at::kChar, at::kByte}) {
    tensors[std::string("t_") + c10::toString(t)] = (at::randn({3, 5}) * 10).to(t);
  }
  tensors["bool"] = at::randn({7}) > 0;
  tensors["scalar"] = at::scalar_tensor(2.5);
  tensors["empty"] = at::zeros({0, 4});
  const std::string path = temp("all.safetensors");
  ASSERT_TRUE(save_safetensors(path, tensors, {{"format", "pt"}}).ok());
  auto back = load_safetensors(path);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->metadata.at("format"), "pt");
  ASSERT_EQ(back->tensors.size(), tensors.size());
  for (const auto& [name, t] : tensors) {
    ASSERT_TRUE(back->tensors.count(name)) << name;
    EXPECT_EQ(back->tensors.at(name).scalar_type(), t.scalar_type()) << name;
    EXPECT_TRUE(at::equal(back->tensors.at(name), t)) << name;
  }
  std::ifstream in(path, std::ios::binary);
  uint64_t header = 0;
  in.read(reinterpret_cast<char*>(&header), 8);
  EXPECT_EQ(header % 8, 0u);  // the data section starts 8-byte aligned
}

TEST(Safetensors, MalformedFilesAreClearErrors) {
  const std::string ok = R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}})";
  EXPECT_NE(error_of(temp("missing.safetensors")).find("cannot open"), std::string::npos);
  {
    const std::string p = temp("tiny");
    std::ofstream(p, std::ios::binary) << "abc";
    EXPECT_NE(error_of(p).find("only 3 bytes; a header length needs 8"), std::string::npos);
  }
  EXPECT_NE(error_of(raw_file("len", ok, 8, 1000)).find("header length 1000 runs past the end"), std::string::npos);
  EXPECT_NE(error_of(raw_file("huge", ok, 8, 1LL << 40)).find("is absurd"), std::string::npos);
  EXPECT_NE(error_of(raw_file("json", "{not json", 0)).find("header is not valid JSON"), std::string::npos);
  EXPECT_NE(error_of(raw_file("array", "[1, 2]", 0)).find("header is not a JSON object"), std::string::npos);
  EXPECT_NE(error_of(raw_file("nodtype", R"({"a": {"shape": [2], "data_offsets": [0, 8]}})", 8)).find("'a': missing dtype"),
            std::string::npos);
  EXPECT_NE(error_of(raw_file("dtype", R"({"a": {"dtype": "F8", "shape": [2], "data_offsets": [0, 2]}})", 2))
                .find("'a': unknown dtype 'F8'"),
            std::string::npos);
  EXPECT_NE(error_of(raw_file("shape", R"({"a": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}})", 8))
                .find("shape entries must be non-negative integers"),
            std::string::npos);
  EXPECT_NE(error_of(raw_file("order", R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}})", 8))
                .find("begin 8 > end 0"),
            std::string::npos);
  EXPECT_NE(error_of(raw_file("past", ok, 4)).find("past the 4 bytes of data (truncated file?)"), std::string::npos);
  EXPECT_NE(error_of(raw_file("size", R"({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}})", 8))
                .find("8 bytes do not hold shape x F32 (12 bytes)"),
            std::string::npos);
  EXPECT_NE(error_of(raw_file("overlap", R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                                          "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})", 8))
                .find("overlaps the previous tensor"),
            std::string::npos);
  EXPECT_NE(error_of(raw_file("hole", R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})", 8))
                .find("hole of 4 bytes before 'a'"),
            std::string::npos);
  EXPECT_NE(error_of(raw_file("trailing", ok, 12)).find("4 trailing bytes after the last tensor"), std::string::npos);
  EXPECT_TRUE(load_safetensors(raw_file("good", ok, 8)).ok());
}

}  // namespace
}  // namespace aln::model
