#include "trainers/engine/pipeline.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <cstring>
#include <optional>

#include <nlohmann/json.hpp>
#include <utility>

#include "aln/v1/control.pb.h"
#include "core/error.h"
#include "core/status.h"
#include "distributed/control_channel.h"

namespace aln::engine {
namespace {

using Clock = std::chrono::steady_clock;
double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

}  // namespace

// The stage model's view of its neighbours for the micro-batch being run.
class Pipeline::Link final : public model::PipelineLink {
 public:
  Link(Pipeline& pipeline, bool grad) : p_(pipeline), grad_(grad) {}
  ~Link() override {
    // Sends still in flight when a step fails: their buffers must outlive MPI's use of them, and
    // the job is ending anyway (the caller reports the error and aborts the world).
    for (auto& s : sends_) s.work->progress();
  }

  int micro = 0;
  std::map<int, at::Tensor> inputs;   // received activations (leaves with gradients when training)
  std::map<int, at::Tensor> outputs;  // this stage's outputs, to run backward from

  at::Tensor receive(const std::vector<int64_t>& shape, at::ScalarType dtype) override {
    at::Tensor x = at::empty(shape, at::TensorOptions().dtype(dtype));
    receive_into(x, p_.stage() - 1, 2 * micro);
    if (grad_) x.requires_grad_(true);
    inputs[micro] = x;
    return x;
  }

  [[noreturn]] void hand_on(const at::Tensor& output) override {
    if (grad_) outputs[micro] = output;
    send(output.detach().contiguous(), p_.stage() + 1, 2 * micro);
    throw model::ForwardHandedOn{};
  }

  // Set before each pass: whether the stage's next pass opens with a receive, which this pass's
  // closing send then waits for and goes with as one group (dist::pipeline_messages; on NCCL two
  // neighbours' ungrouped sends would each wait behind the other's).
  bool joins_next = false;

  void send(at::Tensor tensor, int peer, int tag) {
    p_.stats_.sent_bytes += static_cast<double>(tensor.nbytes());
    post_deferred();  // one no receive took (not expected): still in order, before this one
    Pending pending{std::move(tensor), nullptr, peer, tag};
    if (joins_next) {
      deferred_ = std::move(pending);
      return;
    }
    pending.work = p_.group_->send(pending.tensor, peer, tag);
    sends_.push_back(std::move(pending));
  }

  // Receives `x` from `peer`, together with the send deferred for it if there is one.
  void receive_into(at::Tensor& x, int peer, int tag) {
    std::unique_ptr<dist::Work> work;
    std::optional<Pending> joined = std::exchange(deferred_, std::nullopt);
    if (joined) {
      work = p_.group_->send_recv(joined->tensor, joined->peer, joined->tag, x, peer, tag);
    } else {
      work = p_.group_->recv(x, peer, tag);
    }
    p_.wait(*work, &idle_s);  // the joined send's tensor lives until here
  }

  void finish_sends() {
    post_deferred();
    for (auto& s : sends_) p_.wait(*s.work, &idle_s);
    sends_.clear();
  }

  double idle_s = 0;

 private:
  struct Pending {
    at::Tensor tensor;
    std::unique_ptr<dist::Work> work;
    int peer = 0;
    int tag = 0;
  };
  void post_deferred() {
    if (!deferred_) return;
    Pending pending = std::move(*std::exchange(deferred_, std::nullopt));
    pending.work = p_.group_->send(pending.tensor, pending.peer, pending.tag);
    sends_.push_back(std::move(pending));
  }
  Pipeline& p_;
  bool grad_;
  std::vector<Pending> sends_;
  std::optional<Pending> deferred_;  // a send waiting for the next pass's receive
};

void Pipeline::wait(dist::Work& work, double* idle_s) const {
  const auto start = Clock::now();
  ALN_THROW_IF_ERROR(work.wait(timeout_));
  *idle_s += since(start);
}

std::vector<trainers::LossOutput> Pipeline::train_step(const model::DecoderModel& policy,
                                                       dist::PipelineSchedule schedule,
                                                       const std::function<trainers::LossOutput(int)>& forward,
                                                       const std::vector<double>& weights) {
  const int micro_batches = static_cast<int>(weights.size());
  stats_ = PipelineStats{};
  const auto start = Clock::now();
  Link link(*this, /*grad=*/true);
  std::vector<trainers::LossOutput> outputs(static_cast<size_t>(micro_batches));
  int alive = 0;
  const std::vector<dist::PipelineOp> ops = dist::pipeline_ops(schedule, stages(), stage(), micro_batches);
  for (size_t i = 0; i < ops.size(); ++i) {
    const dist::PipelineOp& op = ops[i];
    const int m = op.micro;
    link.micro = m;
    link.joins_next = i + 1 < ops.size() && dist::receives_first(ops[i + 1], stages(), stage());
    const double idle_before = link.idle_s;
    const auto t0 = Clock::now();
    if (op.forward) {
      policy.set_pipeline_link(&link);
      try {
        outputs[static_cast<size_t>(m)] = forward(m);
      } catch (const model::ForwardHandedOn&) {
        // not the last stage: the pass ended at this stage's output
      }
      policy.set_pipeline_link(nullptr);
      stats_.max_alive = std::max(stats_.max_alive, ++alive);
      stats_.forward_s += since(t0) - (link.idle_s - idle_before);
      continue;
    }
    if (last()) {
      trainers::LossOutput& out = outputs[static_cast<size_t>(m)];
      const double w = weights[static_cast<size_t>(m)];
      (w == 1.0 ? out.loss : out.loss * w).backward();
    } else {
      at::Tensor output = link.outputs.at(m);
      at::Tensor grad = at::empty(output.sizes(), output.options().requires_grad(false));
      link.receive_into(grad, stage() + 1, 2 * m + 1);
      output.backward(grad);
      link.outputs.erase(m);
    }
    if (!first()) {
      at::Tensor input = link.inputs.at(m);
      ALN_CHECK(input.grad().defined(), "pipeline stage ", stage(), ": no gradient reached this stage's input");
      link.send(input.grad().contiguous(), stage() - 1, 2 * m + 1);
      link.inputs.erase(m);
    }
    --alive;
    stats_.backward_s += since(t0) - (link.idle_s - idle_before);
  }
  link.finish_sends();
  stats_.idle_s = link.idle_s;
  stats_.total_s = since(start);

  // Nothing is read here: the last stage's numbers stay tensors until the step's one read, which
  // hands them to the other stages (train_step.cpp).
  for (auto& out : outputs) {
    if (out.loss.defined()) out.loss = out.loss.detach();
  }
  return outputs;
}

bool Pipeline::forward_only(const model::DecoderModel& model, const std::function<void()>& forward) {
  at::NoGradGuard no_grad;
  Link link(*this, /*grad=*/false);
  model.set_pipeline_link(&link);
  bool finished = true;
  try {
    forward();
  } catch (const model::ForwardHandedOn&) {
    finished = false;
  } catch (...) {
    model.set_pipeline_link(nullptr);
    throw;
  }
  model.set_pipeline_link(nullptr);
  link.finish_sends();
  return finished;
}

std::string Pipeline::share_from_last(const std::string& bytes) const {
  if (stages() == 1) return bytes;
  std::string out = bytes;
  ALN_THROW_IF_ERROR(dist::broadcast_frame(*group_, stages() - 1, &out, timeout_));
  return out;
}

std::map<std::string, double> Pipeline::share_from_last(const std::map<std::string, double>& metrics) const {
  if (stages() == 1) return metrics;
  const std::string text = share_from_last(last() ? nlohmann::json(metrics).dump() : std::string());
  return nlohmann::json::parse(text).get<std::map<std::string, double>>();
}

void Pipeline::sum(at::Tensor& tensor) const {
  if (stages() == 1) return;
  ALN_THROW_IF_ERROR(group_->all_reduce_sum(tensor)->wait(timeout_));
}

double Pipeline::sum(double value) const {
  at::Tensor t = at::full({1}, value, at::kDouble);
  sum(t);
  return t.item<double>();
}

std::map<std::string, at::Tensor> Pipeline::gather_to_first(const std::map<std::string, at::Tensor>& mine) const {
  // Tags above any micro-batch's (2m, 2m + 1): a control frame naming the tensors (names, shapes,
  // dtypes), then the tensors in order on the tensor channel.
  constexpr int kTag = 1 << 20;
  constexpr dist::FrameTags kHeader{kTag, kTag + 1};
  std::map<std::string, at::Tensor> out;
  if (!first()) {
    aln::v1::TensorList header;
    std::vector<at::Tensor> data;
    for (const auto& [name, t] : mine) {
      data.push_back(t.detach().contiguous());
      auto* entry = header.add_tensors();
      entry->set_name(name);
      entry->set_dtype(static_cast<int>(t.scalar_type()));
      for (int64_t d : t.sizes()) entry->add_shape(d);
    }
    auto frame = dist::post_frame(*group_, 0, kHeader, header.SerializeAsString());
    ALN_THROW_IF_ERROR(frame.status());
    std::vector<std::unique_ptr<dist::Work>> sent;
    for (const auto& t : data) sent.push_back(group_->send(t, 0, kTag + 2));
    ALN_THROW_IF_ERROR(frame->size_sent->wait(timeout_));
    ALN_THROW_IF_ERROR(frame->bytes_sent->wait(timeout_));
    for (auto& w : sent) ALN_THROW_IF_ERROR(w->wait(timeout_));
    return out;
  }
  for (const auto& [name, t] : mine) out[name] = t.detach();
  for (int s = 1; s < stages(); ++s) {
    aln::v1::TensorList header;
    ALN_THROW_IF_ERROR(dist::receive_message(*group_, s, kHeader, &header, timeout_));
    for (const auto& entry : header.tensors()) {
      at::Tensor t = at::empty(std::vector<int64_t>(entry.shape().begin(), entry.shape().end()),
                               at::TensorOptions().dtype(static_cast<at::ScalarType>(entry.dtype())));
      ALN_THROW_IF_ERROR(group_->recv(t, s, kTag + 2)->wait(timeout_));
      out.emplace(entry.name(), t);  // a tied copy arrives twice: the first stays
    }
  }
  return out;
}

std::vector<double> Pipeline::gather(const std::vector<double>& values) const {
  if (stages() == 1) return values;
  at::Tensor in = at::tensor(values, at::kDouble);
  at::Tensor out = at::empty({stages() * in.numel()}, at::kDouble);
  ALN_THROW_IF_ERROR(group_->all_gather(in, out)->wait(timeout_));
  return std::vector<double>(out.data_ptr<double>(), out.data_ptr<double>() + out.numel());
}

}  // namespace aln::engine
