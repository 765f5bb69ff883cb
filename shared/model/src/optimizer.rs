use crate::{Network, OptimizerKind};
use tch::Tensor;

/// SGD or Adam over a [`Network`]'s parameters. Sparse (embedding) gradients update only the
/// rows they carry; Adam keeps its moments lazily for those rows, as PyTorch's SparseAdam does.
/// Its state belongs to one network: make a new optimizer after [`Network::grow`].
pub struct Optimizer {
    kind: OptimizerKind,
    learning_rate: f64,
    step: i32,
    moments: Vec<Option<(Tensor, Tensor)>>,
}

const BETA1: f64 = 0.9;
const BETA2: f64 = 0.999;
const EPSILON: f64 = 1e-8;

impl Optimizer {
    pub fn new(network: &Network) -> Self {
        let config = network.config();
        Self {
            kind: config.optimizer,
            learning_rate: config.learning_rate,
            step: 0,
            moments: network.named_tensors().iter().map(|_| None).collect(),
        }
    }

    /// Applies the gradients of the last `backward`, then clears them.
    pub fn step(&mut self, network: &mut Network) {
        self.step += 1;
        let lr = self.learning_rate;
        let step = self.step;
        tch::no_grad(|| {
            for (slot, (_, parameter)) in network.params_mut().iter_mut().enumerate() {
                let gradient = parameter.grad();
                if !gradient.defined() {
                    continue;
                }
                match self.kind {
                    OptimizerKind::Sgd => {
                        let _ = parameter
                            .f_add_(&(&gradient * -lr))
                            .expect("gradient matches its parameter");
                    }
                    OptimizerKind::Adam => {
                        let (m, v) = self.moments[slot].get_or_insert_with(|| {
                            (parameter.zeros_like(), parameter.zeros_like())
                        });
                        adam(parameter, &gradient, m, v, lr, step);
                    }
                }
                parameter.zero_grad();
            }
        });
    }
}

fn adam(
    parameter: &mut Tensor,
    gradient: &Tensor,
    m: &mut Tensor,
    v: &mut Tensor,
    lr: f64,
    step: i32,
) {
    let correction1 = 1.0 - BETA1.powi(step);
    let correction2 = 1.0 - BETA2.powi(step);
    if gradient.is_sparse() {
        let gradient = gradient.coalesce();
        let rows = gradient.indices().select(0, 0);
        let values = gradient.values();
        let m_rows = m.index_select(0, &rows) * BETA1 + &values * (1.0 - BETA1);
        let v_rows = v.index_select(0, &rows) * BETA2 + values.square() * (1.0 - BETA2);
        let update = (&m_rows / correction1) / ((&v_rows / correction2).sqrt() + EPSILON) * -lr;
        let _ = m.index_copy_(0, &rows, &m_rows);
        let _ = v.index_copy_(0, &rows, &v_rows);
        let _ = parameter.index_add_(0, &rows, &update);
    } else {
        *m = &*m * BETA1 + gradient * (1.0 - BETA1);
        *v = &*v * BETA2 + gradient.square() * (1.0 - BETA2);
        let update = (&*m / correction1) / ((&*v / correction2).sqrt() + EPSILON) * -lr;
        let _ = parameter
            .f_add_(&update)
            .expect("update matches its parameter");
    }
}
