/* library_types.h for the CPU harness: cudaDataType lives in tm_sim/types.h. */
#ifndef TM_SIM_LIBRARY_TYPES_H
#define TM_SIM_LIBRARY_TYPES_H
#include "tm_sim/types.h"
using namespace tm_sim;
#endif
