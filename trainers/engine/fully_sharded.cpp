#include "trainers/engine/fully_sharded.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <c10/core/CPUAllocator.h>
// The gather and re-gather nodes are autograd Functions; that API lives outside ATen.
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>

#include "core/error.h"
#include "core/status.h"

namespace aln::engine {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

FullySharded* owner_of(AutogradContext* ctx) {
  return reinterpret_cast<FullySharded*>(ctx->saved_data["owner"].toInt());
}

// Forward: this rank's shard of a unit in, the unit's tensors (whole) out. Backward: their
// gradients, laid out as the unit, reduce-scattered into the shard's gradient, and the gathered
// storage freed (every node that used the tensors has run by then: they are the ones that made
// these gradients).
class GatherUnit : public torch::autograd::Function<GatherUnit> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& shard, int64_t owner, int64_t unit) {
    auto* fs = reinterpret_cast<FullySharded*>(owner);
    at::Tensor flat = fs->materialize(static_cast<size_t>(unit));
    ctx->saved_data["owner"] = owner;
    ctx->saved_data["unit"] = unit;
    ctx->saved_data["flat"] = flat;
    (void)shard;
    return fs->unflatten(static_cast<size_t>(unit), flat);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    FullySharded* fs = owner_of(ctx);
    const auto unit = static_cast<size_t>(ctx->saved_data["unit"].toInt());
    const at::Tensor flat = ctx->saved_data["flat"].toTensor();
    at::Tensor flat_grad = at::zeros({flat.numel()}, flat.options());
    const std::vector<at::Tensor> parts = fs->unflatten(unit, flat_grad);
    for (size_t i = 0; i < grads.size() && i < parts.size(); ++i) {
      if (grads[i].defined()) parts[i].copy_(grads[i]);
    }
    at::Tensor shard_grad = fs->reduce_scatter(unit, flat_grad);
    fs->free(unit, flat);
    return {shard_grad, at::Tensor(), at::Tensor()};
  }
};

// Identity on a layer's output; its backward gathers the layer's tensors again (into the storage
// the forward pass used, which autograd's saved tensors still point at) before the layer's own
// backward nodes, which all wait for this gradient, run. Then it starts the gather of the layer
// before (`before`: that layer's storage in the same pass; no elements for the first layer, as
// autograd takes no undefined tensor here), whose backward comes next.
class RegatherUnit : public torch::autograd::Function<RegatherUnit> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, int64_t owner, int64_t unit,
                            const at::Tensor& flat, const at::Tensor& before) {
    ctx->saved_data["owner"] = owner;
    ctx->saved_data["unit"] = unit;
    ctx->saved_data["flat"] = flat;
    ctx->saved_data["before"] = before;
    return x;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    FullySharded* fs = owner_of(ctx);
    const auto unit = static_cast<size_t>(ctx->saved_data["unit"].toInt());
    fs->refill(unit, ctx->saved_data["flat"].toTensor());
    const at::Tensor before = ctx->saved_data["before"].toTensor();
    if (before.numel() > 0) fs->prefetch_into(unit - 1, before);
    return {grads[0], at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

c10::Allocator* allocator_of(const c10::Storage& storage, c10::DeviceType device) {
  c10::Allocator* a = storage.allocator();
  return a != nullptr ? a : c10::GetAllocator(device);
}

}  // namespace

FullySharded::FullySharded(const DataParallel& dp, model::DecoderModel& policy, bool deterministic)
    : dp_(dp), policy_(policy), deterministic_(deterministic) {
  cut_into_units();
  // This rank's range of each tensor, copied from the whole ones (no unit-sized buffer).
  for (const auto& [name, t] : policy.tensors()) take(name, t);
  finish();
}

FullySharded::FullySharded(const DataParallel& dp, model::DecoderModel& policy, bool deterministic, ShapesOnly shapes)
    : dp_(dp), policy_(policy), deterministic_(deterministic), shapes_device_(shapes.device) {
  cut_into_units();
  finish();
}

void FullySharded::cut_into_units() {
  ALN_CHECK(dp_.size() > 1, "fully sharded parameters need more than one data-parallel rank");
  ALN_CHECK(policy_.is_whole() && policy_.param_gather() == nullptr, "fully sharded: the policy must be whole");
  const model::ModelConfig& c = policy_.config();
  // An embedding that is not the head gets a unit of its own, freed as soon as the lookup is done.
  const bool tied = c.tie_embeddings && c.head == model::Head::kCausalLm;
  embedding_ = tied ? 0 : 1;
  first_layer_ = tied ? 1 : 2;
  units_.resize(first_layer_ + static_cast<size_t>(c.num_layers));
  // Name order inside each unit (the map's), the same on every rank.
  for (const auto& [name, t] : policy_.tensors()) {
    const int64_t layer = model::DecoderModel::layer_of(c, name);
    const bool embedding =
        name == "transformer.wte.weight" || name == "transformer.wpe.weight" || name == "model.embed_tokens.weight";
    const size_t k = layer >= 0 ? first_layer_ + static_cast<size_t>(layer) : embedding ? embedding_ : 0;
    Unit& u = units_[k];
    where_[name] = {k, u.entries.size()};
    u.entries.push_back({name, t.sizes().vec(), u.total, t.numel()});
    u.total += t.numel();
  }
  // Shards on the parameters' device, float32 (a shapes-only policy's meta tensors: the one asked for).
  const at::Tensor& first = policy_.tensors().begin()->second;
  const at::Device device = first.is_meta() ? shapes_device_ : first.device();
  trains_ = first.requires_grad();
  const int64_t ranks = dp_.size();
  for (size_t k = 0; k < units_.size(); ++k) {
    Unit& u = units_[k];
    ALN_CHECK(u.total > 0, "fully sharded: unit ", k, " of the policy has no tensors");
    u.width = (u.total + ranks - 1) / ranks;
    u.shard = at::zeros({u.width}, at::TensorOptions().dtype(at::kFloat).device(device));
  }
}

void FullySharded::take(const std::string& name, const at::Tensor& whole) {
  settle();
  auto found = where_.find(name);
  ALN_CHECK(found != where_.end(), "fully sharded: '", name, "' is not a parameter of the policy");
  Unit& u = units_[found->second.first];
  const Entry& e = u.entries[found->second.second];
  ALN_CHECK(whole.numel() == e.numel, "fully sharded: '", name, "' has ", whole.numel(), " elements, the parameter ",
            e.numel);
  at::NoGradGuard no_grad;
  const int64_t a0 = lo(u), b0 = std::min(u.total, a0 + u.width);
  const int64_t a = std::max(a0, e.offset), b = std::min(b0, e.offset + e.numel);
  if (a < b) {
    u.shard.detach().narrow(0, a - a0, b - a).copy_(whole.detach().reshape(-1).narrow(0, a - e.offset, b - a));
  }
}

void FullySharded::take_parts(const optim::TensorMap& parts) {
  settle();
  at::NoGradGuard no_grad;
  optim::TensorMap mine = parameter_parts();
  for (const auto& [name, part] : mine) {
    auto it = parts.find(name);
    ALN_CHECK(it != parts.end(), "fully sharded: no part of '", name, "' for this rank");
    ALN_CHECK(it->second.numel() == part.numel(), "fully sharded: the part of '", name, "' has ", it->second.numel(),
              " elements, this rank's range ", part.numel());
    part.copy_(it->second.reshape(-1));
  }
}

void FullySharded::finish() {
  const int64_t ranks = dp_.size();
  for (size_t k = 0; k < units_.size(); ++k) {
    Unit& u = units_[k];
    u.shard.set_requires_grad(trains_);
    // The whole tensors go; placeholders of the right shapes stay in the model's map, over a storage
    // that holds no memory until a pass gathers into a storage of its own.
    const at::TensorOptions options = u.shard.options().requires_grad(false);
    const int64_t bytes = u.width * ranks * static_cast<int64_t>(sizeof(float));
    c10::Allocator* allocator = c10::GetAllocator(options.device().type());
    // (Not resizable: a stray resize of a placeholder fails instead of allocating quietly.)
    c10::Storage storage(c10::Storage::use_byte_size_t(), bytes, at::DataPtr(nullptr, options.device()), allocator,
                         /*resizable=*/false);
    place(k, unflatten(k, at::empty({0}, options).set_(storage, 0, {u.width * ranks}, {1})));
    storage.set_nbytes(0);
  }
  policy_.set_param_gather(this);
}

FullySharded::~FullySharded() {
  // A prefetch still in flight here means a pass failed (every normal one takes or settles its
  // own): not waited for, which would hold the job's exit for another timeout. An MPI work
  // dropped unfinished keeps the buffers it writes alive; a thread-backend one counts this rank
  // out; an NCCL one's buffers are recorded on its stream, so the caching allocator keeps them
  // until the collective is done.
  prefetch_.reset();
  policy_.set_param_gather(nullptr);
}

std::vector<at::Tensor> FullySharded::unflatten(size_t unit, const at::Tensor& flat) const {
  std::vector<at::Tensor> out;
  out.reserve(units_[unit].entries.size());
  for (const Entry& e : units_[unit].entries) {
    std::vector<int64_t> strides(e.shape.size(), 1);
    for (int64_t d = static_cast<int64_t>(e.shape.size()) - 2; d >= 0; --d) {
      strides[static_cast<size_t>(d)] = strides[static_cast<size_t>(d + 1)] * e.shape[static_cast<size_t>(d + 1)];
    }
    // set_, not narrow/view: a tensor over the storage that autograd does not track as a view of
    // `flat` (the gather node's outputs must be its own).
    out.push_back(at::empty({0}, flat.options()).set_(flat.storage(), flat.storage_offset() + e.offset, e.shape, strides));
  }
  return out;
}

void FullySharded::place(size_t unit, const std::vector<at::Tensor>& tensors) {
  model::TensorMap& map = policy_.tensors();
  const auto& entries = units_[unit].entries;
  for (size_t i = 0; i < entries.size(); ++i) map[entries[i].name] = tensors[i];
}

at::Tensor FullySharded::materialize(size_t unit) {
  if (prefetch_ && !prefetch_->backward && prefetch_->unit == unit) {
    Prefetch p = std::move(*prefetch_);
    prefetch_.reset();
    ALN_THROW_IF_ERROR(p.work->wait(dp_.timeout()));
    ++prefetches_used_;
    return p.flat;
  }
  settle();
  const Unit& u = units_[unit];
  at::Tensor flat = at::empty({u.width * dp_.size()}, u.shard.options().requires_grad(false));
  at::Tensor input = u.shard.detach();
  ALN_THROW_IF_ERROR(dp_.start_all_gather(input, flat)->wait(dp_.timeout()));
  if (is_layer(unit)) {
    layer_bytes_ += flat.numel() * static_cast<int64_t>(flat.element_size());
    peak_layer_bytes_ = std::max(peak_layer_bytes_, layer_bytes_);
  }
  return flat;
}

void FullySharded::allocate(const at::Tensor& flat) {
  c10::Storage storage = flat.storage();
  const size_t bytes = static_cast<size_t>(flat.numel()) * flat.element_size();
  if (storage.nbytes() < bytes) {
    storage.set_data_ptr_noswap(allocator_of(storage, flat.device().type())->allocate(bytes));
    storage.set_nbytes(bytes);
  }
}

void FullySharded::refill(size_t unit, const at::Tensor& flat) {
  if (prefetch_ && prefetch_->backward && prefetch_->flat.is_alias_of(flat)) {
    Prefetch p = std::move(*prefetch_);
    prefetch_.reset();
    ALN_THROW_IF_ERROR(p.work->wait(dp_.timeout()));
    ++prefetches_used_;
    return;
  }
  settle();
  allocate(flat);
  at::Tensor out = flat;
  at::Tensor input = units_[unit].shard.detach();
  // Written by the collective, not by a tensor operation: the tensors autograd saved keep their
  // version, as they keep their values.
  ALN_THROW_IF_ERROR(dp_.start_all_gather(input, out)->wait(dp_.timeout()));
  if (is_layer(unit)) {
    layer_bytes_ += flat.numel() * static_cast<int64_t>(flat.element_size());
    peak_layer_bytes_ = std::max(peak_layer_bytes_, layer_bytes_);
  }
}

void FullySharded::prefetch_into(size_t unit, const at::Tensor& flat) {
  if (flat.storage().nbytes() > 0) return;  // still gathered (nothing freed it)
  allocate(flat);
  start_prefetch(unit, flat, true);
}

void FullySharded::start_prefetch(size_t unit, const at::Tensor& flat, bool backward) {
  settle();
  at::Tensor out = flat;
  prefetch_ = Prefetch{unit, flat, dp_.start_all_gather(units_[unit].shard.detach(), out), backward};
  // Counted from now: the storage is held from now. (The outer unit is not a layer: outer_bytes().)
  if (is_layer(unit)) {
    layer_bytes_ += flat.numel() * static_cast<int64_t>(flat.element_size());
    peak_layer_bytes_ = std::max(peak_layer_bytes_, layer_bytes_);
  }
}

void FullySharded::settle() {
  if (!prefetch_) return;
  Prefetch p = std::move(*prefetch_);
  prefetch_.reset();
  ALN_THROW_IF_ERROR(p.work->wait(dp_.timeout()));
  ++prefetches_dropped_;
  if (p.backward) {
    free(p.unit, p.flat);
  } else if (is_layer(p.unit)) {
    layer_bytes_ -= p.flat.numel() * static_cast<int64_t>(p.flat.element_size());  // a new storage, dropped
  }
}

void FullySharded::free(size_t unit, const at::Tensor& flat) {
  if (prefetch_ && prefetch_->flat.is_alias_of(flat)) settle();  // frees it when backward's
  c10::Storage storage = flat.storage();
  if (storage.nbytes() == 0) return;
  if (is_layer(unit)) layer_bytes_ -= static_cast<int64_t>(storage.nbytes());
  storage.set_nbytes(0);
  storage.set_data_ptr_noswap(allocator_of(storage, flat.device().type())->allocate(0));
}

at::Tensor FullySharded::reduce_scatter(size_t unit, const at::Tensor& flat_grad) const {
  const Unit& u = units_[unit];
  const int64_t ranks = dp_.size();
  at::Tensor out = at::empty({u.width}, flat_grad.options());
  if (deterministic_) {
    // Every rank's gradient, then this rank's block added rank by rank: the bits of the
    // deterministic all-reduce ((g0 + g1) + g2 ...).
    at::Tensor gathered = at::empty({ranks * flat_grad.numel()}, flat_grad.options());
    ALN_THROW_IF_ERROR(dp_.start_all_gather(flat_grad, gathered)->wait(dp_.timeout()));
    at::Tensor mine = gathered.view({ranks, ranks, u.width}).select(1, dp_.rank()).contiguous().view(-1);
    dp_.add_in_rank_order(mine, out);
  } else {
    ALN_THROW_IF_ERROR(dp_.start_reduce_scatter(flat_grad, out)->wait(dp_.timeout()));
  }
  return out;
}

void FullySharded::drop_unheld_outer() {
  const Unit& u = units_[0];
  const at::Tensor& last = policy_.tensors().at(u.entries.front().name);
  const c10::Storage storage = last.storage();
  if (storage.nbytes() > 0 && storage.use_count() == static_cast<size_t>(u.entries.size()) + 1) free(0, last);
}

void FullySharded::pass_done() { drop_unheld_outer(); }

void FullySharded::gather(size_t unit) {
  // The last pass's outer tensors go first when nothing but the model's map holds them (no autograd
  // graph, whose gather node keeps a handle, and no caller): a pass without autograd (evaluation,
  // scoring) then never holds two copies.
  if (unit == 0) drop_unheld_outer();
  variable_list outs =
      GatherUnit::apply(units_[unit].shard, reinterpret_cast<int64_t>(this), static_cast<int64_t>(unit));
  place(unit, outs);
}

void FullySharded::gather_outer() {
  gather(embedding_);
  last_released_ = at::Tensor();  // a new pass
  if (first_layer_ < units_.size()) start_prefetch(first_layer_, layer_storage(first_layer_), false);
}

void FullySharded::embedded() {
  if (embedding_ == 0) return;  // tied: the head's unit, kept for the pass
  const Unit& u = units_[embedding_];
  free(embedding_, policy_.tensors().at(u.entries.front().name));
}

void FullySharded::gather_head() {
  if (embedding_ != 0) gather(0);  // tied: gathered with the embedding at the start
}

void FullySharded::gather_layer(int64_t layer) {
  const size_t unit = first_layer_ + static_cast<size_t>(layer);
  gather(unit);
  if (unit + 1 < units_.size()) {
    start_prefetch(unit + 1, layer_storage(unit + 1), false);
  } else if (embedding_ != 0) {
    // The last layer: an untied head's unit is gathered while it computes (gather_head takes it).
    // The last pass's outer tensors go first when only the model's map holds them, so a pass
    // without autograd still never holds two copies.
    drop_unheld_outer();
    start_prefetch(0, layer_storage(0), false);
  }
}

at::Tensor FullySharded::layer_storage(size_t unit) const {
  const Unit& u = units_[unit];
  return at::empty({u.width * dp_.size()}, u.shard.options().requires_grad(false));
}

at::Tensor FullySharded::release_layer(int64_t layer, const at::Tensor& output) {
  const size_t unit = first_layer_ + static_cast<size_t>(layer);
  const Unit& u = units_[unit];
  // The storage the layer's tensors (in the model's map) were gathered into.
  const at::Tensor flat = at::empty({0}, u.shard.options().requires_grad(false))
                              .set_(policy_.tensors().at(u.entries.front().name).storage(), 0,
                                    {u.width * dp_.size()}, {1});
  at::Tensor out = output;
  if (at::GradMode::is_enabled() && output.requires_grad() && u.shard.requires_grad()) {
    out = RegatherUnit::apply(output, reinterpret_cast<int64_t>(this), static_cast<int64_t>(unit), flat,
                              last_released_.defined() ? last_released_ : at::empty({0}, flat.options()));
    last_released_ = flat;
  } else {
    last_released_ = at::Tensor();
  }
  free(unit, flat);
  return out;
}

void FullySharded::set_requires_grad(bool requires_grad) {
  for (Unit& u : units_) u.shard.set_requires_grad(requires_grad);
}

optim::TensorMap FullySharded::owned() {
  settle();  // the caller may change the shards (AdamW): no gather may still be reading them
  last_released_ = at::Tensor();
  optim::TensorMap out;
  for (Unit& u : units_) {
    const int64_t a0 = lo(u), b0 = std::min(u.total, a0 + u.width);
    const at::Tensor data = u.shard.detach();
    const at::Tensor grad = u.shard.grad();
    for (const Entry& e : u.entries) {
      const int64_t a = std::max(a0, e.offset), b = std::min(b0, e.offset + e.numel);
      if (a >= b) continue;
      at::Tensor view = data.narrow(0, a - a0, b - a);
      if (grad.defined()) view.mutable_grad() = grad.narrow(0, a - a0, b - a);
      out.emplace(e.name, view);
    }
  }
  return out;
}

optim::TensorMap FullySharded::assemble(const optim::TensorMap& parts, const std::string& suffix,
                                        bool lead_only) const {
  const bool keep = !lead_only || dp_.rank() == 0;
  at::NoGradGuard no_grad;
  optim::TensorMap out;
  at::TensorOptions options = units_.front().shard.options().requires_grad(false);
  if (!parts.empty()) options = parts.begin()->second.options().dtype(at::kFloat).requires_grad(false);
  for (const Unit& u : units_) {
    const int64_t a0 = lo(u), b0 = std::min(u.total, a0 + u.width);
    at::Tensor local = at::zeros({u.width}, options);
    for (const Entry& e : u.entries) {
      const int64_t a = std::max(a0, e.offset), b = std::min(b0, e.offset + e.numel);
      auto it = parts.find(e.name + suffix);
      if (a >= b || it == parts.end()) continue;
      ALN_CHECK(it->second.numel() == b - a, "fully sharded: '", e.name + suffix, "' holds ", it->second.numel(),
                " elements, this rank's part is ", b - a);
      local.narrow(0, a - a0, b - a).copy_(it->second.reshape(-1));
    }
    const at::Tensor all = dp_.all_gather(local);
    if (!keep) continue;
    for (const Entry& e : u.entries) out[e.name + suffix] = all.narrow(0, e.offset, e.numel).view(e.shape).clone();
  }
  return out;
}

optim::TensorMap FullySharded::cut(const optim::TensorMap& whole, const std::string& suffix) const {
  optim::TensorMap out;
  for (const Unit& u : units_) {
    const int64_t a0 = lo(u), b0 = std::min(u.total, a0 + u.width);
    for (const Entry& e : u.entries) {
      const int64_t a = std::max(a0, e.offset), b = std::min(b0, e.offset + e.numel);
      auto it = whole.find(e.name + suffix);
      if (a >= b || it == whole.end()) continue;
      ALN_CHECK(it->second.numel() == e.numel, "fully sharded: '", e.name + suffix, "' has ", it->second.numel(),
                " elements, the parameter ", e.numel);
      out.emplace(e.name + suffix, it->second.reshape(-1).narrow(0, a - e.offset, b - a).clone());
    }
  }
  return out;
}

void FullySharded::for_each_whole(const std::function<void(const std::string&, const at::Tensor&)>& f) const {
  size_t current = units_.size();
  at::Tensor gathered;
  for (const auto& [name, placeholder] : policy_.tensors()) {
    const auto [k, i] = where_.at(name);
    if (k != current) {
      gathered = dp_.all_gather(units_[k].shard.detach());
      current = k;
    }
    const Entry& e = units_[k].entries[i];
    f(name, gathered.narrow(0, e.offset, e.numel).view(e.shape));
  }
}

model::DecoderModel FullySharded::whole() const {
  std::optional<model::DecoderModel> made = gather_whole(false);
  return std::move(*made);
}

std::optional<model::DecoderModel> FullySharded::whole_on_lead() const { return gather_whole(true); }

optim::TensorMap FullySharded::parameter_parts() const {
  optim::TensorMap parts;
  for (const Unit& u : units_) {
    const int64_t a0 = lo(u), b0 = std::min(u.total, a0 + u.width);
    for (const Entry& e : u.entries) {
      const int64_t a = std::max(a0, e.offset), b = std::min(b0, e.offset + e.numel);
      if (a < b) parts.emplace(e.name, u.shard.detach().narrow(0, a - a0, b - a));
    }
  }
  return parts;
}

std::map<std::string, ShardedTensor> FullySharded::layout() const {
  std::map<std::string, ShardedTensor> out;
  for (const Unit& u : units_) {
    for (const Entry& e : u.entries) {
      ShardedTensor& t = out[e.name];
      t.shape = e.shape;
      for (int64_t k = 0; k < dp_.size(); ++k) {
        const int64_t a = std::max(k * u.width, e.offset), b = std::min((k + 1) * u.width, e.offset + e.numel);
        if (a < b) t.parts.push_back({k, a - e.offset, b - a});
      }
    }
  }
  return out;
}

std::vector<ShardRange> FullySharded::ranges() const {
  std::vector<ShardRange> out;
  for (const auto& [name, t] : layout()) {
    for (const ShardPart& p : t.parts) {
      if (p.rank == dp_.rank()) out.push_back({name, p.offset, p.numel});
    }
  }
  return out;
}

std::optional<model::DecoderModel> FullySharded::gather_whole(bool lead_only) const {
  const optim::TensorMap parts = parameter_parts();
  optim::TensorMap tensors = assemble(parts, "", lead_only);
  if (tensors.empty()) return std::nullopt;
  auto made = model::DecoderModel::from_tensors(policy_.config(), std::move(tensors));
  ALN_THROW_IF_ERROR(made.status());
  return std::move(*made);
}

void FullySharded::clear_gradients() {
  for (Unit& u : units_) u.shard.mutable_grad() = at::Tensor();
}

int64_t FullySharded::shard_bytes() const {
  int64_t n = 0;
  for (const Unit& u : units_) n += u.width * 4;
  return n;
}

int64_t FullySharded::whole_bytes() const {
  int64_t n = 0;
  for (const Unit& u : units_) n += u.total * 4;
  return n;
}

int64_t FullySharded::outer_bytes() const { return units_.front().width * dp_.size() * 4; }

int64_t FullySharded::embedding_bytes() const {
  return embedding_ == 0 ? 0 : units_[embedding_].width * dp_.size() * 4;
}

int64_t FullySharded::largest_layer_bytes() const {
  int64_t n = 0;
  for (size_t k = first_layer_; k < units_.size(); ++k) n = std::max(n, units_[k].width * dp_.size() * 4);
  return n;
}

double FullySharded::owned_share() const {
  int64_t mine = 0, total = 0;
  for (const Unit& u : units_) {
    const int64_t a0 = lo(u), b0 = std::min(u.total, a0 + u.width);
    mine += std::max<int64_t>(0, b0 - a0);
    total += u.total;
  }
  return total > 0 ? static_cast<double>(mine) / static_cast<double>(total) : 1.0;
}

}  // namespace aln::engine
