// Round trips of our safetensors reader/writer and one test per kind of malformed file.
#include "core/io/safetensors.h"

#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>

#include <ATen/ops/arange.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/equal.h>
#include <ATen/ops/randn.h>
#include <ATen/ops/scalar_tensor.h>
#include <gtest/gtest.h>

namespace aln::io {
namespace {

namespace fs = std::filesystem;

class SafetensorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("aln_io_test_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  // A file of raw bytes: length prefix + header (no padding) + `data_bytes` zero bytes.
  std::string write_raw(const std::string& header, size_t data_bytes, uint64_t declared_len = UINT64_MAX) {
    uint64_t len = declared_len == UINT64_MAX ? header.size() : declared_len;
    std::string bytes;
    for (int i = 0; i < 8; ++i) bytes.push_back(static_cast<char>((len >> (8 * i)) & 0xff));
    bytes += header;
    bytes.append(data_bytes, '\0');
    return write_bytes(bytes);
  }
  std::string write_bytes(const std::string& bytes) {
    std::string p = path("bad.safetensors");
    std::ofstream(p, std::ios::binary) << bytes;
    return p;
  }

  // Loads a hand-made file expecting InvalidArgument whose message names the file and contains `what`.
  void expect_invalid(const std::string& file, const std::string& what) {
    auto loaded = load_safetensors(file);
    ASSERT_FALSE(loaded.ok()) << "accepted a malformed file; expected error about: " << what;
    EXPECT_EQ(loaded.status().code(), absl::StatusCode::kInvalidArgument) << loaded.status();
    EXPECT_NE(loaded.status().message().find(file), std::string_view::npos) << loaded.status();
    EXPECT_NE(loaded.status().message().find(what), std::string_view::npos) << loaded.status();
  }

  fs::path dir_;
};

std::string read_all(const std::string& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

void expect_same(const at::Tensor& a, const at::Tensor& b) {
  ASSERT_EQ(a.scalar_type(), b.scalar_type());
  ASSERT_EQ(a.sizes(), b.sizes());
  // Bitwise comparison (NaN-safe): both are contiguous CPU tensors of the same size.
  at::Tensor ca = a.contiguous(), cb = b.contiguous();
  ASSERT_EQ(ca.nbytes(), cb.nbytes());
  EXPECT_EQ(std::memcmp(ca.data_ptr(), cb.data_ptr(), ca.nbytes()), 0);
}

TEST_F(SafetensorsTest, RoundTripsEveryDtype) {
  const std::vector<at::ScalarType> types = {at::kDouble, at::kFloat, at::kHalf, at::kBFloat16, at::kLong,
                                             at::kInt,    at::kShort, at::kChar, at::kByte,     at::kBool};
  NamedTensors tensors;
  for (at::ScalarType t : types) {
    at::Tensor x = at::arange(-6, 6, at::TensorOptions().dtype(at::kDouble)).mul(1.25);
    if (t == at::kByte) x = x.abs();
    if (t == at::kBool) x = x.gt(0);
    tensors.emplace_back(std::string("t_") + c10::toString(t), x.to(t).reshape({3, 4}));
  }
  tensors.emplace_back("scalar", at::scalar_tensor(3.5, at::TensorOptions().dtype(at::kBFloat16)));
  tensors.emplace_back("empty", at::empty({0, 5}, at::TensorOptions().dtype(at::kHalf)));
  tensors.emplace_back("randn", at::randn({7, 3}));
  tensors.emplace_back("strided", at::arange(24, at::TensorOptions().dtype(at::kInt)).reshape({4, 6}).t());
  const SafetensorsMetadata metadata = {{"format", "pt"}, {"note", "quote \" newline \n é"}};
  ASSERT_TRUE(save_safetensors(path("a.safetensors"), tensors, metadata).ok());
  EXPECT_FALSE(fs::exists(path("a.safetensors.tmp")));

  auto loaded = load_safetensors(path("a.safetensors"));
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->metadata, metadata);
  ASSERT_EQ(loaded->tensors.size(), tensors.size());
  for (const auto& [name, t] : tensors) {
    SCOPED_TRACE(name);
    ASSERT_TRUE(loaded->tensors.contains(name));
    expect_same(loaded->tensors.at(name), t);
  }
  EXPECT_EQ(loaded->tensors.at("scalar").dim(), 0);
  EXPECT_EQ(loaded->tensors.at("empty").numel(), 0);
}

TEST_F(SafetensorsTest, WritesPythonLayout) {
  // Same order and header bytes Python's safetensors 0.8 produces for these tensors (checked by
  // tests/parity/safetensors_parity.py too): I64 before F64 before F32 ..., names within a dtype.
  NamedTensors tensors = {{"b", at::empty({2}, at::kBool).fill_(true)},
                          {"z", at::empty({1}, at::kFloat).fill_(1)},
                          {"a", at::empty({1}, at::kFloat).fill_(2)},
                          {"d", at::empty({1}, at::kDouble).fill_(3)},
                          {"l", at::empty({1}, at::kLong).fill_(4)}};
  ASSERT_TRUE(save_safetensors(path("o.safetensors"), tensors, {{"format", "pt"}}).ok());
  const std::string bytes = read_all(path("o.safetensors"));
  const std::string header =
      R"({"__metadata__":{"format":"pt"},"l":{"dtype":"I64","shape":[1],"data_offsets":[0,8]},)"
      R"("d":{"dtype":"F64","shape":[1],"data_offsets":[8,16]},)"
      R"("a":{"dtype":"F32","shape":[1],"data_offsets":[16,20]},)"
      R"("z":{"dtype":"F32","shape":[1],"data_offsets":[20,24]},)"
      R"("b":{"dtype":"BOOL","shape":[2],"data_offsets":[24,26]}})";
  const size_t padded = (header.size() + 7) / 8 * 8;
  ASSERT_EQ(bytes.size(), 8 + padded + 26);
  EXPECT_EQ(static_cast<unsigned char>(bytes[0]) | static_cast<unsigned char>(bytes[1]) << 8, padded);
  EXPECT_EQ(bytes.substr(8, header.size()), header);
  EXPECT_EQ(bytes.substr(8 + header.size(), padded - header.size()), std::string(padded - header.size(), ' '));
}

TEST_F(SafetensorsTest, NoTensorsAndNoMetadata) {
  ASSERT_TRUE(save_safetensors(path("e.safetensors"), {}).ok());
  EXPECT_EQ(read_all(path("e.safetensors")), std::string("\x08\0\0\0\0\0\0\0{}      ", 16));
  auto loaded = load_safetensors(path("e.safetensors"));
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_TRUE(loaded->tensors.empty());
  EXPECT_TRUE(loaded->metadata.empty());
}

TEST_F(SafetensorsTest, OverwritesAtomically) {
  ASSERT_TRUE(save_safetensors(path("w.safetensors"), {{"x", at::empty({3}, at::kFloat).fill_(1)}}).ok());
  ASSERT_TRUE(save_safetensors(path("w.safetensors"), {{"y", at::empty({2}, at::kLong).fill_(2)}}).ok());
  auto loaded = load_safetensors(path("w.safetensors"));
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ASSERT_EQ(loaded->tensors.size(), 1u);
  EXPECT_TRUE(loaded->tensors.contains("y"));
  EXPECT_FALSE(fs::exists(path("w.safetensors.tmp")));
}

TEST_F(SafetensorsTest, WriterRejectsBadInput) {
  at::Tensor x = at::empty({2}, at::kFloat).fill_(0);
  EXPECT_EQ(save_safetensors(path("d.safetensors"), {{"x", x}, {"x", x}}).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(save_safetensors(path("d.safetensors"), {{"__metadata__", x}}).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(save_safetensors(path("d.safetensors"), {{"c", at::empty({2}, at::kComplexFloat)}}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(save_safetensors(path("d.safetensors"), {{"u", at::Tensor()}}).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(save_safetensors(path("d.safetensors"), {{std::string("\xff\xfe"), x}}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(fs::exists(path("d.safetensors")));
  EXPECT_FALSE(fs::exists(path("d.safetensors.tmp")));
  EXPECT_FALSE(save_safetensors((dir_ / "no_such_dir" / "x.safetensors").string(), {{"x", x}}).ok());
}

// One tensor at a time: the bytes save_safetensors writes; a tensor out of order, of another
// shape, or missing is an error naming it, and no file is left.
TEST_F(SafetensorsTest, StreamedWriteEqualsWholeWriteAndChecksEachTensor) {
  const NamedTensors tensors = {
      {"b", at::randn({3, 2}, at::kFloat)}, {"a", at::arange(5, at::kLong)}, {"c", at::randn({4}, at::kFloat)}};
  ASSERT_TRUE(save_safetensors(path("whole.safetensors"), tensors, {{"format", "pt"}}).ok());
  std::vector<TensorSpec> specs;
  for (const auto& [name, t] : tensors) specs.push_back({name, t.scalar_type(), t.sizes().vec()});
  const std::vector<std::string> order = safetensors_file_order(specs);
  EXPECT_EQ(order, (std::vector<std::string>{"a", "b", "c"}));  // I64 before F32, then by name
  auto tensor = [&](const std::string& name) {
    for (const auto& [n, t] : tensors) {
      if (n == name) return t;
    }
    return at::Tensor();
  };
  absl::Status streamed = save_safetensors_streamed(path("streamed.safetensors"), specs,
                                                    [&](const TensorPut& put) {
                                                      for (const std::string& name : order) {
                                                        absl::Status s = put(name, tensor(name));
                                                        if (!s.ok()) return s;
                                                      }
                                                      return absl::OkStatus();
                                                    },
                                                    {{"format", "pt"}});
  ASSERT_TRUE(streamed.ok()) << streamed;
  EXPECT_EQ(read_all(path("streamed.safetensors")), read_all(path("whole.safetensors")));

  auto refused = [&](const std::function<absl::Status(const TensorPut&)>& produce, const std::string& what) {
    absl::Status s = save_safetensors_streamed(path("bad_stream.safetensors"), specs, produce);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    EXPECT_NE(s.message().find(what), std::string_view::npos) << s;
    EXPECT_FALSE(fs::exists(path("bad_stream.safetensors")));
  };
  refused([&](const TensorPut& put) { return put("b", tensor("b")); }, "tensor 'b' came where 'a'");
  refused([&](const TensorPut& put) { return put("a", at::arange(4, at::kLong)); }, "as Long [4]");
  refused([&](const TensorPut& put) { return put("a", tensor("a")); }, "2 of 3 tensors never came (the first: 'b')");
}

// Slices read with pread equal the same elements of the whole tensor; ranges outside a tensor and
// tensors the file lacks are errors naming them.
TEST_F(SafetensorsTest, SlicesEqualTheWholeTensorsElements) {
  const at::Tensor m = at::randn({4, 5}, at::kFloat), v = at::arange(7, at::kLong);
  ASSERT_TRUE(save_safetensors(path("s.safetensors"), {{"m", m}, {"v", v}}).ok());
  auto read = load_safetensors_slices(path("s.safetensors"), {{"m1", "m", 3, 9}, {"v0", "v", 0, 7}, {"e", "m", 20, 0}});
  ASSERT_TRUE(read.ok()) << read.status();
  expect_same(read->at("m1"), m.reshape({-1}).narrow(0, 3, 9));
  expect_same(read->at("v0"), v);
  EXPECT_EQ(read->at("e").numel(), 0);
  auto outside = load_safetensors_slices(path("s.safetensors"), {{"x", "m", 15, 6}});
  EXPECT_NE(outside.status().message().find("elements [15, 21) of tensor 'm' asked for; it has 20"),
            std::string_view::npos)
      << outside.status();
  auto missing = load_safetensors_slices(path("s.safetensors"), {{"x", "w", 0, 1}});
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("no tensor 'w'"), std::string_view::npos) << missing.status();
}

TEST_F(SafetensorsTest, MissingFileIsNotFound) {
  auto loaded = load_safetensors(path("missing.safetensors"));
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(loaded.status().message().find("missing.safetensors"), std::string_view::npos);
}

TEST_F(SafetensorsTest, ReadsHeaderOnly) {
  ASSERT_TRUE(save_safetensors(path("h.safetensors"), {{"x", at::empty({2, 3}, at::kHalf)}}).ok());
  auto header = read_safetensors_header(path("h.safetensors"));
  ASSERT_TRUE(header.ok()) << header.status();
  ASSERT_EQ(header->entries.size(), 1u);
  EXPECT_EQ(header->entries[0].dtype, at::kHalf);
  EXPECT_EQ(header->entries[0].shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(header->data_start % 8, 0u);
}

// ---- malformed files: one test per rule ----

TEST_F(SafetensorsTest, RejectsFileShorterThanLengthField) {
  expect_invalid(write_bytes(std::string("\x02\0\0", 3)), "shorter than the 8-byte header length");
}

TEST_F(SafetensorsTest, RejectsEmptyFile) { expect_invalid(write_bytes(""), "file is 0 bytes"); }

TEST_F(SafetensorsTest, RejectsHeaderLengthPastEndOfFile) {
  expect_invalid(write_raw("{}", 0, /*declared_len=*/3), "runs past the end of the file");
}

TEST_F(SafetensorsTest, RejectsAbsurdHeaderLength) {
  expect_invalid(write_raw("{}", 0, /*declared_len=*/uint64_t{1} << 62), "exceeds the limit");
  expect_invalid(write_raw("{}", 0, /*declared_len=*/100'000'001), "exceeds the limit");
}

TEST_F(SafetensorsTest, RejectsInvalidJson) {
  expect_invalid(write_raw(R"({"a": {"dtype": "F32",)", 0), "header is not valid JSON");
  expect_invalid(write_raw(std::string("{\"\xff\":1}"), 0), "header is not valid JSON");  // not UTF-8
  expect_invalid(write_raw("", 0), "header is not valid JSON");
}

TEST_F(SafetensorsTest, RejectsHeaderThatIsNotAnObject) {
  expect_invalid(write_raw("[1, 2]", 0), "header must be a JSON object");
}

TEST_F(SafetensorsTest, RejectsEntryThatIsNotAnObject) {
  expect_invalid(write_raw(R"({"a": 5})", 0), "tensor 'a': entry must be a JSON object");
}

TEST_F(SafetensorsTest, RejectsMissingDtype) {
  expect_invalid(write_raw(R"({"a": {"shape": [1], "data_offsets": [0, 4]}})", 4), "tensor 'a': missing \"dtype\"");
}

TEST_F(SafetensorsTest, RejectsMissingShape) {
  expect_invalid(write_raw(R"({"a": {"dtype": "F32", "data_offsets": [0, 4]}})", 4), "tensor 'a': missing \"shape\"");
}

TEST_F(SafetensorsTest, RejectsMissingDataOffsets) {
  expect_invalid(write_raw(R"({"a": {"dtype": "F32", "shape": [1]}})", 4), "tensor 'a': missing \"data_offsets\"");
}

TEST_F(SafetensorsTest, RejectsWrongJsonTypes) {
  expect_invalid(write_raw(R"({"a": {"dtype": 3, "shape": [1], "data_offsets": [0, 4]}})", 4),
                 "\"dtype\" must be a string");
  expect_invalid(write_raw(R"({"a": {"dtype": "F32", "shape": "1", "data_offsets": [0, 4]}})", 4),
                 "\"shape\" must be an array");
  expect_invalid(write_raw(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": {"b": 0}}})", 4),
                 "\"data_offsets\" must be [begin, end]");
  expect_invalid(write_raw(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4, 8]}})", 4),
                 "\"data_offsets\" must be [begin, end]");
  expect_invalid(write_raw(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, -4]}})", 4),
                 "\"data_offsets\" must be [begin, end]");
  expect_invalid(write_raw(R"({"__metadata__": {"k": 1}})", 0), "\"__metadata__\" value of 'k' must be a string");
  expect_invalid(write_raw(R"({"__metadata__": [1]})", 0), "\"__metadata__\" must be an object");
}

TEST_F(SafetensorsTest, RejectsUnknownDtype) {
  expect_invalid(write_raw(R"({"a": {"dtype": "F8_E4M3", "shape": [1], "data_offsets": [0, 1]}})", 1),
                 "unsupported dtype \"F8_E4M3\"");
}

TEST_F(SafetensorsTest, RejectsNegativeOrNonIntegerShape) {
  expect_invalid(write_raw(R"({"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 0]}})", 0),
                 "shape[0] is -1, not a non-negative integer");
  expect_invalid(write_raw(R"({"a": {"dtype": "F32", "shape": [2, 1.5], "data_offsets": [0, 0]}})", 0),
                 "shape[1] is 1.5, not a non-negative integer");
  expect_invalid(write_raw(R"({"a": {"dtype": "F32", "shape": ["2"], "data_offsets": [0, 0]}})", 0),
                 "shape[0] is \"2\"");
  // Dimensions whose product overflows must not wrap around to a size that matches the offsets.
  expect_invalid(write_raw(R"({"a": {"dtype": "F32", "shape": [4611686018427387904, 4], "data_offsets": [0, 0]}})", 0),
                 "is too large");
}

TEST_F(SafetensorsTest, RejectsBeginAfterEnd) {
  expect_invalid(write_raw(R"({"a": {"dtype": "U8", "shape": [0], "data_offsets": [4, 0]}})", 4),
                 "data_offsets begin 4 is after end 0");
}

TEST_F(SafetensorsTest, RejectsEndPastDataBuffer) {
  expect_invalid(write_raw(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}})", 4),
                 "data_offsets end 8 is past the end of the data buffer (4 bytes)");
}

TEST_F(SafetensorsTest, RejectsOverlappingRanges) {
  expect_invalid(write_raw(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},)"
                           R"( "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})",
                           8),
                 "tensor 'b' [4, 8) overlaps tensor 'a' [0, 8)");
}

TEST_F(SafetensorsTest, RejectsHoleBetweenTensors) {
  expect_invalid(write_raw(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},)"
                           R"( "b": {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]}})",
                           12),
                 "data buffer bytes [4, 8) belong to no tensor");
  expect_invalid(write_raw(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})", 8),
                 "data buffer bytes [0, 4) belong to no tensor");
}

TEST_F(SafetensorsTest, RejectsTrailingBytes) {
  expect_invalid(write_raw(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}})", 6),
                 "data buffer bytes [4, 6) at the end belong to no tensor");
}

TEST_F(SafetensorsTest, RejectsByteSizeMismatch) {
  expect_invalid(write_raw(R"({"a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 12]}})", 12),
                 "data_offsets span 12 bytes but shape [2,2] of F32 needs 16");
}

// A dtype nested 10^6 deep crashed the reader (the error path serialised it recursively); the
// depth is refused before parsing, as serde_json (Python's reader) refuses it past 128 levels.
TEST_F(SafetensorsTest, RejectsDeepNestingBeforeParsing) {
  const size_t depth = 1'000'000;
  const std::string header = R"({"a": {"dtype": )" + std::string(depth, '[') + std::string(depth, ']') +
                             R"(, "shape": [1], "data_offsets": [0, 4]}})";
  // The two objects and 126 brackets are within the limit; the 127th '[' (byte 142) is level 129.
  expect_invalid(write_raw(header, 4), "header: JSON nested deeper than 128 levels (at byte 142)");
  // 126 levels inside the two objects load up to the dtype check, whose message shows an excerpt.
  const std::string ok_depth = R"({"a": {"dtype": )" + std::string(126, '[') + std::string(126, ']') +
                               R"(, "shape": [1], "data_offsets": [0, 4]}})";
  expect_invalid(write_raw(ok_depth, 4), "\"dtype\" must be a string, got [[[[...]]]]");
}

// Values and parser messages in errors are excerpts: a 1 MB dtype string or an unterminated 1 MB
// string must not come back whole in the one-line message.
TEST_F(SafetensorsTest, ErrorsQuoteShortExcerpts) {
  const std::string big(1'000'000, 'x');
  auto loaded = load_safetensors(write_raw(R"({"a": {"dtype": ")" + big + R"(", "shape": [1], "data_offsets": [0, 4]}})", 4));
  ASSERT_FALSE(loaded.ok());
  EXPECT_LT(loaded.status().message().size(), 400u) << loaded.status().message().substr(0, 400);
  EXPECT_NE(loaded.status().message().find("unsupported dtype \"xxxxxxxx"), std::string_view::npos);
  loaded = load_safetensors(write_raw(R"({"a": {"dtype": ")" + big, 0));
  ASSERT_FALSE(loaded.ok());
  EXPECT_LT(loaded.status().message().size(), 500u) << loaded.status().message().substr(0, 500);
  EXPECT_NE(loaded.status().message().find("header is not valid JSON"), std::string_view::npos);
  EXPECT_NE(loaded.status().message().find("more bytes)"), std::string_view::npos);
}

TEST_F(SafetensorsTest, RejectsDuplicateNames) {
  expect_invalid(write_raw(R"({"a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]},)"
                           R"( "a": {"dtype": "U8", "shape": [1], "data_offsets": [1, 2]}})",
                           2),
                 "tensor name 'a' appears more than once");
  expect_invalid(write_raw(R"({"a": {"dtype": "U8", "dtype": "I8", "shape": [1], "data_offsets": [0, 1]}})", 1),
                 "duplicate key 'dtype'");
}

TEST_F(SafetensorsTest, RejectsBoolBytesOtherThanZeroOrOne) {
  std::string file = write_raw(R"({"a": {"dtype": "BOOL", "shape": [2], "data_offsets": [0, 2]}})", 0);
  std::ofstream(file, std::ios::binary | std::ios::app) << std::string("\x01\x07", 2);
  expect_invalid(file, "BOOL tensor 'a' holds byte 7 at element 1");
}

}  // namespace
}  // namespace aln::io

namespace aln::io {
namespace {

// Found by fuzz_safetensors_header: a number out of double range made the JSON parser throw
// out_of_range, which escaped as an uncaught exception.
TEST(SafetensorsFuzzRegression, NumberOutOfRangeIsAnError) {
  auto header = parse_safetensors_header(R"({"a": 1111111111111111111111111e111111111})", 0, "fuzz");
  ASSERT_FALSE(header.ok());
  EXPECT_NE(header.status().message().find("header is not valid JSON"), std::string::npos) << header.status();
}

}  // namespace
}  // namespace aln::io
