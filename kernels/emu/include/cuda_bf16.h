// The emulator's stand-in for CUDA's header (kernels/emu/cuda_emu.h is force-included first).
#pragma once
#include "../cuda_emu.h"
