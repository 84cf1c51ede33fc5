#pragma once
// The random generators a checkpoint saves and a resume restores: LibTorch's CPU generator ("cpu")
// and the default generator of every CUDA device this process has used ("cuda:<index>"), so dropout
// and sampling that draw from them continue as if the run had not stopped.
#include <string>
#include <vector>

#include "core/model/decoder.h"

namespace aln::engine {

// Every generator in use, by name. Devices this process never touched are left out (reading them
// would create a context on each GPU of the node).
model::TensorMap rng_states();

// Restores the generators named in `states` ("cpu" must be there). Returns the names it could not
// restore (a checkpoint from a GPU run resumed where that device does not exist): the caller warns,
// since draws on those devices will differ from the uninterrupted run.
std::vector<std::string> set_rng_states(const model::TensorMap& states);

}  // namespace aln::engine
