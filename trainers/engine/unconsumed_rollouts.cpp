#include "trainers/engine/unconsumed_rollouts.h"

#include <ATen/ATen.h>

#include <cstring>
#include <filesystem>
#include <map>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/error.h"
#include "core/status.h"
#include "distributed/service.h"

namespace aln::engine {
namespace {

namespace fs = std::filesystem;

constexpr char kRanksKey[] = "policy_ranks";
constexpr const char* kParts[] = {"tokens", "logprobs", "lengths"};

// Length-prefixed strings, for the trip between ranks.
void put(std::string& out, const std::string& s) {
  const uint64_t n = s.size();
  out.append(reinterpret_cast<const char*>(&n), sizeof n);
  out.append(s);
}

std::vector<std::string> split(const uint8_t* data, int64_t size) {
  std::vector<std::string> out;
  int64_t at = 0;
  while (at < size) {
    uint64_t n = 0;
    ALN_CHECK(at + static_cast<int64_t>(sizeof n) <= size, "kept rollouts: a truncated length");
    std::memcpy(&n, data + at, sizeof n);
    at += sizeof n;
    ALN_CHECK(n <= static_cast<uint64_t>(size - at), "kept rollouts: a string past the end");
    out.emplace_back(reinterpret_cast<const char*>(data + at), n);
    at += static_cast<int64_t>(n);
  }
  return out;
}

at::Tensor bytes_tensor(const std::string& s) {
  at::Tensor t = at::empty({static_cast<int64_t>(s.size())}, at::kByte);
  if (!s.empty()) std::memcpy(t.data_ptr<uint8_t>(), s.data(), s.size());
  return t;
}

}  // namespace

io::NamedTensors gather_unconsumed(RemoteSampler& sampler, const DataParallel& world) {
  int64_t failed = 0;
  std::string mine;
  for (const RemoteSampler::Answer& a : sampler.unconsumed(&failed)) {
    put(mine, a.request);
    put(mine, a.reply.SerializeAsString());
  }
  // Each rank may have waited for its rollout rank as long as a generation takes; the collectives
  // below are bounded by parallel.timeout_s, so all first wait for each other that long (the sum
  // of the failed answers is that wait).
  const double failed_anywhere = world.sum(static_cast<double>(failed), sampler.long_wait());
  const at::Tensor sizes = world.all_gather(at::tensor({static_cast<int64_t>(mine.size())}, at::kLong));
  const int64_t widest = sizes.max().item<int64_t>();
  io::NamedTensors out;
  // Kept for every rank or for none: a resumed rank that lacked one of its answers would ask for
  // the version's weights alone, where the ranks change versions together. A failed answer ends the
  // job when its step takes it anyway; answers past 1 GiB a rank are generated again rather than
  // sent between ranks in one message.
  if (widest == 0 || failed_anywhere > 0 || widest > (int64_t{1} << 30)) return out;
  at::Tensor padded = at::zeros({widest}, at::kByte);
  if (!mine.empty()) std::memcpy(padded.data_ptr<uint8_t>(), mine.data(), mine.size());
  const at::Tensor all = world.all_gather(padded);
  if (!world.lead()) return out;  // rank 0 writes them
  out.emplace_back(kRanksKey, at::tensor({static_cast<int64_t>(world.size())}, at::kLong));
  for (int r = 0; r < world.size(); ++r) {
    const std::vector<std::string> strings = split(all.data_ptr<uint8_t>() + r * widest, sizes[r].item<int64_t>());
    for (size_t i = 0; i + 1 < strings.size(); i += 2) {
      const std::string prefix = absl::StrCat("rank", r, ".", i / 2, ".");
      aln::v1::ServiceReply reply;
      ALN_CHECK(reply.ParseFromString(strings[i + 1]) && reply.tensors_size() == 3, "kept rollouts: policy rank ", r,
                "'s answer ", i / 2, " is not a generate answer");
      out.emplace_back(prefix + "request", bytes_tensor(strings[i]));
      for (int k = 0; k < 3; ++k) {
        auto t = dist::from_proto(reply.tensors(k));
        ALN_THROW_IF_ERROR(t.status());
        out.emplace_back(prefix + kParts[k], *t);
      }
    }
  }
  return out;
}

absl::Status write_unconsumed(const std::string& dir, const io::NamedTensors& tensors) {
  if (tensors.empty()) return absl::OkStatus();
  return io::save_safetensors((fs::path(dir) / kUnconsumedRolloutsFile).string(), tensors);
}

absl::StatusOr<int64_t> restore_unconsumed(const std::string& dir, RemoteSampler& sampler, int rank, int ranks) {
  const std::string path = (fs::path(dir) / kUnconsumedRolloutsFile).string();
  if (!fs::exists(path)) return 0;
  const std::string prefix = absl::StrCat("rank", rank, ".");
  auto file = io::load_safetensors(
      path, [&](const std::string& name) { return name == kRanksKey || name.rfind(prefix, 0) == 0; });
  if (!file.ok()) return file.status();
  const auto& tensors = file->tensors;
  const auto saved = tensors.find(kRanksKey);
  if (saved == tensors.end() || saved->second.numel() != 1) {
    return absl::DataLossError(
        absl::StrCat(path, ": no ", kRanksKey, " (start without --resume, or from another checkpoint)"));
  }
  if (saved->second.item<int64_t>() != ranks) return 0;
  std::vector<RemoteSampler::Answer> answers;
  for (int64_t i = 0;; ++i) {
    const std::string at = absl::StrCat(prefix, i, ".");
    const auto request = tensors.find(at + "request");
    if (request == tensors.end()) break;
    RemoteSampler::Answer a;
    const at::Tensor bytes = request->second.contiguous();
    if (bytes.scalar_type() != at::kByte || bytes.dim() != 1) {
      return absl::DataLossError(absl::StrCat(path, ": ", at, "request is not uint8 bytes"));
    }
    a.request.assign(reinterpret_cast<const char*>(bytes.data_ptr<uint8_t>()), static_cast<size_t>(bytes.numel()));
    aln::v1::ServiceRequest parsed;
    if (!parsed.ParseFromString(a.request) || parsed.method() != "generate") {
      return absl::DataLossError(absl::StrCat(path, ": ", at, "request is not a generate request"));
    }
    at::Tensor parts[3];
    for (int k = 0; k < 3; ++k) {
      const auto t = tensors.find(at + kParts[k]);
      if (t == tensors.end()) return absl::DataLossError(absl::StrCat(path, ": ", at, kParts[k], " is missing"));
      parts[k] = t->second;
    }
    // What generate() returns: tokens int64 [rows, N], log-probs float32 [rows, N], lengths int64 [rows].
    if (parts[0].scalar_type() != at::kLong || parts[0].dim() != 2 || parts[1].scalar_type() != at::kFloat ||
        !parts[1].sizes().equals(parts[0].sizes()) || parts[2].scalar_type() != at::kLong || parts[2].dim() != 1 ||
        parts[2].size(0) != parts[0].size(0)) {
      return absl::DataLossError(absl::StrCat(path, ": ", at, "{tokens, logprobs, lengths} are not int64 [rows, N], ",
                                              "float32 [rows, N] and int64 [rows]"));
    }
    for (const at::Tensor& t : parts) dist::to_proto(t, a.reply.add_tensors());
    answers.push_back(std::move(a));
  }
  const auto count = static_cast<int64_t>(answers.size());
  sampler.restore(std::move(answers));
  return count;
}

}  // namespace aln::engine
