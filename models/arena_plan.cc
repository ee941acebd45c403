// Names of the recomputation options the planner models.
#include "models/arena_plan.h"

namespace tessera {

const char* recompute_name(ActivationRecompute recompute) {
  switch (recompute) {
    case ActivationRecompute::kNone:
      return "NONE";
    case ActivationRecompute::kSelective:
      return "SELECTIVE";
    case ActivationRecompute::kFull:
      return "FULL";
  }
  return "NONE";
}

}  // namespace tessera
