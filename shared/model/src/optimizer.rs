use crate::explicit::Gradient;
use crate::{Network, OptimizerKind};
use tch::{Kind, Tensor};

/// SGD or Adam over a [`Network`]'s parameters. Sparse (embedding) gradients update only the
/// rows they carry; Adam keeps its moments lazily for those rows, as PyTorch's SparseAdam does.
/// Its state belongs to one network: make a new optimizer after [`Network::grow`].
pub struct Optimizer {
    kind: OptimizerKind,
    learning_rate: f64,
    step: i32,
    moments: Vec<Option<Moments>>,
}

/// Adam's state for one parameter.
enum Moments {
    /// Per element, in the parameter's precision (the dense layers: small).
    Dense { first: Tensor, second: Tensor },
    /// For an embedding table, as FBGEMM's partial row-wise Adam: the first moment per element
    /// in bfloat16 and the second moment one per row (the mean of the row's squared gradient),
    /// in f32. The tables are most of the model; full f32 moments would triple their memory
    /// (1.5 GB at 10 M votes), these add 0.5x and touch less memory per step.
    Rows { first: Tensor, second: Tensor },
}

impl Moments {
    fn for_gradient(parameter: &Tensor, gradient: &Gradient) -> Self {
        match gradient {
            Gradient::Rows { .. } => {
                let (size, device) = (parameter.size(), parameter.device());
                Self::Rows {
                    first: Tensor::zeros(&size, (Kind::BFloat16, device)),
                    second: Tensor::zeros([size[0]], (Kind::Float, device)),
                }
            }
            Gradient::Dense(_) => Self::Dense {
                first: parameter.zeros_like(),
                second: parameter.zeros_like(),
            },
        }
    }
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

    /// Applies the gradients of autograd's last `backward`, then clears them.
    pub fn step(&mut self, network: &mut Network) {
        let gradients: Vec<Option<Gradient>> = network
            .named_tensors()
            .iter()
            .map(|(_, parameter)| Gradient::accumulated(parameter))
            .collect();
        self.apply(network, &gradients);
        tch::no_grad(|| {
            for (_, parameter) in network.params_mut() {
                parameter.zero_grad();
            }
        });
    }

    /// Applies one step's gradients, given in the order of `Network::named_tensors`.
    pub(crate) fn apply(&mut self, network: &mut Network, gradients: &[Option<Gradient>]) {
        self.step += 1;
        let lr = self.learning_rate;
        let step = self.step;
        tch::no_grad(|| {
            for (slot, ((_, parameter), gradient)) in
                network.params_mut().iter_mut().zip(gradients).enumerate()
            {
                let Some(gradient) = gradient else {
                    continue;
                };
                match (self.kind, gradient) {
                    (OptimizerKind::Sgd, Gradient::Rows { rows, values }) => {
                        // One index_add of the rows as they come (a row used twice adds twice),
                        // not a coalesced sparse tensor added row by row (a quarter of the
                        // update's time).
                        let _ = parameter.index_add_(0, rows, &(values * -lr));
                    }
                    (OptimizerKind::Sgd, Gradient::Dense(gradient)) => {
                        let _ = parameter
                            .f_add_(&(gradient * -lr))
                            .expect("gradient matches its parameter");
                    }
                    (OptimizerKind::Adam, gradient) => {
                        let moments = self.moments[slot]
                            .get_or_insert_with(|| Moments::for_gradient(parameter, gradient));
                        adam(parameter, gradient, moments, lr, step);
                    }
                }
            }
        });
    }
}

/// One Adam step, in place where it can be: every temporary tensor is an allocation and an
/// operator dispatch, which at batch 512 cost more than the arithmetic.
fn adam(parameter: &mut Tensor, gradient: &Gradient, moments: &mut Moments, lr: f64, step: i32) {
    let correction1 = 1.0 - BETA1.powi(step);
    let correction2 = 1.0 - BETA2.powi(step);
    // update = -lr · (m / c1) / (sqrt(v / c2) + ε) = m / d, with d = (sqrt(v) / sqrt(c2) + ε) · -c1 / lr
    let denominator_of = |second: &Tensor| {
        let mut denominator = second.sqrt();
        let _ = denominator
            .g_div_scalar_(correction2.sqrt())
            .g_add_scalar_(EPSILON)
            .g_mul_scalar_(-correction1 / lr);
        denominator
    };
    match (moments, gradient) {
        (Moments::Rows { first, second }, Gradient::Rows { rows, values }) => {
            // One sum per row the batch used.
            let gradient = Tensor::sparse_coo_tensor_indices_size(
                &rows.unsqueeze(0),
                values,
                parameter.size(),
                (values.kind(), values.device()),
                false,
            )
            .coalesce();
            let rows = gradient.indices().select(0, 0);
            let values = gradient.values();
            let mut m_rows = first.index_select(0, &rows).to_kind(Kind::Float);
            let _ = m_rows.lerp_(&values, 1.0 - BETA1);
            let mut v_rows = second.index_select(0, &rows);
            let _ = v_rows.lerp_(
                &values.square().mean_dim(1, false, Kind::Float),
                1.0 - BETA2,
            );
            let _ = first.index_copy_(0, &rows, &m_rows.to_kind(Kind::BFloat16));
            let _ = second.index_copy_(0, &rows, &v_rows);
            let _ = m_rows.g_div_(&denominator_of(&v_rows).unsqueeze(1));
            let _ = parameter.index_add_(0, &rows, &m_rows);
        }
        (Moments::Dense { first, second }, Gradient::Dense(gradient)) => {
            let _ = first.lerp_(gradient, 1.0 - BETA1);
            let _ = second.lerp_(&gradient.square(), 1.0 - BETA2);
            let _ = parameter.addcdiv_(first, &denominator_of(second));
        }
        _ => unreachable!("a parameter's gradients are all rows or all dense"),
    }
}
