// Test helper for tests/parity/*_run_parity.py: prints the examples of each step of a job's first
// stage as `aln train` (one process) takes them, so a Python trainer can be fed the same batches.
// Usage: batch_order_tool JOB.yaml STEPS  ->  [["file:line", ...], ...] (one list per step)
// Built from the engine's own pieces (build_stage_data with the stage's seeds, then the Buffer), so a
// change there shows up here.
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>

#include "core/buffer/buffer.h"
#include "core/config/job_config.h"
#include "trainers/engine/examples.h"
#include "trainers/engine/text_encoder.h"
#include "trainers/trainer.h"

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: batch_order_tool JOB.yaml STEPS\n");
    return 2;
  }
  auto job = aln::config::load_job_file(argv[1]);
  if (!job.ok()) {
    std::fprintf(stderr, "batch_order_tool: %s\n", std::string(job.status().message()).c_str());
    return 1;
  }
  const aln::v1::JobSpec& spec = job->spec;
  const aln::v1::StageSpec stage = aln::config::effective_stages(spec).at(0);
  aln::trainers::TrainerRegistry registry("trainer");
  aln::trainers::register_all(registry);
  auto trainer = registry.create(aln::config::method_name(stage.trainer()), stage);
  auto encoder = aln::engine::load_text_encoder(spec.model().tokenizer(), spec.model().chat_format());
  if (!trainer.ok() || !encoder.ok()) {
    std::fprintf(stderr, "batch_order_tool: %s\n",
                 std::string((trainer.ok() ? encoder.status() : trainer.status()).message()).c_str());
    return 1;
  }
  const aln::config::StageSeeds seeds = aln::config::stage_seeds(spec, stage, 0);
  auto data = aln::engine::build_stage_data(stage, (*trainer)->needs().records, **encoder, seeds.eval_split);
  if (!data.ok()) {
    std::fprintf(stderr, "batch_order_tool: %s\n", std::string(data.status().message()).c_str());
    return 1;
  }
  aln::buffer::Buffer buffer(std::move(data->train), static_cast<uint64_t>(seeds.shuffle));
  const int64_t per_step = stage.optimizer().micro_batch_size() * stage.optimizer().gradient_accumulation();
  nlohmann::json out = nlohmann::json::array();
  for (int step = 0; step < std::stoi(argv[2]); ++step) {
    nlohmann::json batch = nlohmann::json::array();
    for (const auto* e : buffer.next(per_step)) batch.push_back(e->source);
    out.push_back(batch);
  }
  std::cout << out.dump() << std::endl;
  return 0;
}
