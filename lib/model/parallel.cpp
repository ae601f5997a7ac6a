// Expert and pipeline placement (see include/ds/model/parallel.hpp).
#include "ds/model/parallel.hpp"

#include <algorithm>

#include "ds/core/error.hpp"

namespace ds::model {

std::pair<int64_t, int64_t> ExpertParallel::local_range(int64_t E) const {
  const int64_t n = size();
  if (E % n != 0)
    DS_THROW(ConfigError,
             "--ep {}: n_routed_experts ({}) must be divisible by the expert-parallel size", n, E);
  const int64_t per = E / n;
  return {rank() * per, (rank() + 1) * per};
}

std::pair<int64_t, int64_t> stage_layers(int64_t n_layers, int pp_size, int pp_rank) {
  if (pp_size < 1 || pp_rank < 0 || pp_rank >= pp_size)
    DS_THROW(InternalError, "stage_layers: stage {} of {}", pp_rank, pp_size);
  if (n_layers < pp_size)
    DS_THROW(ConfigError, "--pp {}: the model has only {} layer{} (at least one per stage)",
             pp_size, n_layers, n_layers == 1 ? "" : "s");
  const int64_t base = n_layers / pp_size, extra = n_layers % pp_size;
  // stages 0..extra-1 take base + 1 layers
  const int64_t first = pp_rank * base + std::min<int64_t>(pp_rank, extra);
  return {first, first + base + (pp_rank < extra ? 1 : 0)};
}

}  // namespace ds::model
