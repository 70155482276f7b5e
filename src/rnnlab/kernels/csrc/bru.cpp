// Fused CPU kernels of the uBRU (not yet written: the cell runs the step loop).
#include <torch/extension.h>

void register_bru(pybind11::module& m) { (void)m; }
