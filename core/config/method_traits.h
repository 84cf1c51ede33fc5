#pragma once
// A method's traits as job.proto declares them on its options message (aln.v1.MethodTraits in
// options.proto), for the code that must know them without loading the method: validation, the
// launcher's rank count, the pipeline check. Nothing here names a method.
#include <string>
#include <vector>

#include "aln/v1/job.pb.h"

namespace aln::config {

struct MethodTraits {
  std::string name;                // the TrainerSpec field set ("" when none)
  bool generates = false;          // samples its own data
  bool pipeline = false;           // runs on pipeline stages
  bool reference_ranks = false;    // with placement: separate, the reference gets ranks of its own
  bool samples_in_steps = false;   // generates in its training steps (rollout ranks can serve it)
};

// The traits of the method `trainer` sets, its reference rule evaluated on its options. A rule the
// evaluator cannot read is a programming error in job.proto (thrown; a test reads every method's).
MethodTraits method_traits(const aln::v1::TrainerSpec& trainer);

// Every method the TrainerSpec oneof offers, in field order; `pipeline_only` keeps those that run
// on pipeline stages.
std::vector<std::string> method_names(bool pipeline_only = false);

}  // namespace aln::config
