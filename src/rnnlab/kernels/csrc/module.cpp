// The Python bindings of rnnlab's fused CPU kernels.
#include <torch/extension.h>

#include <vector>

#include "packed_gemm.h"

// For the tests: A W^T (transpose) or A W through the packed recurrent product.
at::Tensor packed_product(at::Tensor A, at::Tensor W, bool transpose) {
  const rnnlab::PackedProduct product(W, transpose);
  auto out = at::empty({A.size(0), transpose ? W.size(0) : W.size(1)}, A.options());
  product(out, A.contiguous());
  return out;
}

std::vector<at::Tensor> lstm_forward(at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                                     at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                                     at::Tensor, at::Tensor, at::Tensor, std::vector<int64_t>,
                                     std::vector<int64_t>, bool);
std::vector<at::Tensor> lstm_backward(at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                                      at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                                      at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                                      at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                                      at::Tensor, at::Tensor, std::vector<int64_t>,
                                      std::vector<int64_t>);
std::vector<at::Tensor> gru_forward(at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                                    at::Tensor, at::Tensor, at::Tensor, bool, bool);
std::vector<at::Tensor> gru_backward(at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                                     at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                                     at::Tensor, at::Tensor, at::Tensor, at::Tensor, bool);
std::vector<at::Tensor> tanh_forward(at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                                     at::Tensor, at::Tensor, bool);
std::vector<at::Tensor> tanh_backward(at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                                      at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                                      at::Tensor, at::Tensor);

// gru_like.cpp: EGRU, GateL0RD's latent, NC-GRU.
std::vector<at::Tensor> egru_forward(at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                                     at::Tensor, at::Tensor, at::Tensor, bool);
std::vector<at::Tensor> egru_backward(at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                                      at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                                      double, double);
std::vector<at::Tensor> gatel0rd_forward(at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                                         at::Tensor, at::Tensor, bool);
std::vector<at::Tensor> gatel0rd_backward(at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                                          at::Tensor, at::Tensor, at::Tensor, at::Tensor);
std::vector<at::Tensor> ncgru_forward(at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                                      at::Tensor, bool);
std::vector<at::Tensor> ncgru_backward(at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                                       at::Tensor, at::Tensor, at::Tensor, at::Tensor);

std::vector<at::Tensor> gated_scan_forward(at::Tensor, at::Tensor, at::Tensor, int64_t);
std::vector<at::Tensor> gated_scan_backward(at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                                            at::Tensor, at::Tensor, int64_t);

// spiking.cpp (adLIF, RadLIF), bru.cpp (the uBRU) and state_regularised.cpp (SR-GRU, SR-LSTM)
// add their own functions.
void register_spiking(pybind11::module& m);
void register_bru(pybind11::module& m);
void register_state_regularised(pybind11::module& m);

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  // The kernels touch no Python object: they release the GIL, so other Python threads (a study
  // worker's heartbeat, a data loader) run while a long sequence is processed.
  using release = pybind11::call_guard<pybind11::gil_scoped_release>;
  m.def("lstm_forward", &lstm_forward, "fused LSTM-family forward (CPU)", release());
  m.def("lstm_backward", &lstm_backward, "fused LSTM-family backward (CPU)", release());
  m.def("gru_forward", &gru_forward, "fused GRU forward, torch form or Chung's v1 (CPU)",
        release());
  m.def("gru_backward", &gru_backward, "fused GRU backward (CPU)", release());
  m.def("tanh_forward", &tanh_forward, "fused tanh RNN forward (CPU)", release());
  m.def("tanh_backward", &tanh_backward, "fused tanh RNN backward (CPU)", release());
  m.def("packed_product", &packed_product, "A W^T or A W as the time loops compute it (CPU)",
        release());
  m.def("gated_scan_forward", &gated_scan_forward, "minGRU / minLSTM from x_proj (CPU)",
        release());
  m.def("gated_scan_backward", &gated_scan_backward, "its backward (CPU)", release());
  m.def("egru_forward", &egru_forward, "fused EGRU forward (CPU)", release());
  m.def("egru_backward", &egru_backward, "fused EGRU backward, pseudo-derivative (CPU)",
        release());
  m.def("gatel0rd_forward", &gatel0rd_forward, "fused GateL0RD latent forward (CPU)", release());
  m.def("gatel0rd_backward", &gatel0rd_backward, "fused GateL0RD latent backward (CPU)",
        release());
  m.def("ncgru_forward", &ncgru_forward, "fused NC-GRU forward (CPU)", release());
  m.def("ncgru_backward", &ncgru_backward, "fused NC-GRU backward (CPU)", release());
  register_spiking(m);
  register_bru(m);
  register_state_regularised(m);
}
