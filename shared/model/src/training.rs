//! Epochs over votes held as whole columns: a batch is an `index_select` of a shuffled row order,
//! so no tensor is built per row and nothing is copied to the host in the loop but the loss.

use crate::{Batch, Network, Optimizer};
use std::time::{Duration, Instant};
use tch::{Device, Kind, Tensor};

/// Votes as columns of row indices and 0/1 labels, on the network's device.
pub struct Votes {
    pub users: Tensor,
    pub posts: Tensor,
    pub channels: Tensor,
    pub labels: Tensor,
}

impl Votes {
    pub fn from_columns(
        users: &[i64],
        posts: &[i64],
        channels: &[i64],
        labels: &[f32],
        device: Device,
    ) -> Self {
        assert!(
            users.len() == posts.len()
                && posts.len() == channels.len()
                && channels.len() == labels.len(),
            "columns of one length"
        );
        Self {
            users: Tensor::from_slice(users).to_device(device),
            posts: Tensor::from_slice(posts).to_device(device),
            channels: Tensor::from_slice(channels).to_device(device),
            labels: Tensor::from_slice(labels).to_device(device),
        }
    }

    pub fn len(&self) -> i64 {
        self.labels.size()[0]
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every row, in order.
    pub fn all_rows(&self) -> Tensor {
        Tensor::arange(self.len(), (Kind::Int64, self.labels.device()))
    }

    fn select(&self, rows: &Tensor) -> (Batch, Tensor) {
        (
            Batch {
                users: self.users.index_select(0, rows),
                posts: self.posts.index_select(0, rows),
                channels: self.channels.index_select(0, rows),
                id_kept: None,
            },
            self.labels.index_select(0, rows),
        )
    }
}

/// One epoch over `rows` (indices into `votes`) in a random order; returns the mean loss, read
/// out of each step as a plain number. `on_batch` hears of each batch done, and may stop the
/// epoch there (the loss is then the mean over the batches done).
pub fn train_epoch(
    network: &mut Network,
    optimizer: &mut Optimizer,
    votes: &Votes,
    rows: &Tensor,
    batch_size: i64,
    on_batch: impl FnMut(i64) -> std::ops::ControlFlow<()>,
) -> f64 {
    let mut times = StepTimes::default();
    train_epoch_timed(
        network, optimizer, votes, rows, batch_size, on_batch, &mut times,
    )
}

/// Where the steps of an epoch spent their time, summed over its steps. On the CPU libtorch runs
/// each operation before returning, so each phase's wall time is its own; on a GPU operations are
/// queued and the time lands where the loss is read out.
#[derive(Debug, Clone, Default)]
pub struct StepTimes {
    pub steps: u64,
    /// Gathering the batch's columns from the shuffled order.
    pub batch: Duration,
    /// The forward pass to the loss: embedding gathers, the network, the loss.
    pub forward: Duration,
    /// Gradients: the network's, and the embeddings' sparse ones.
    pub backward: Duration,
    /// The loss copied to the host.
    pub readout: Duration,
    /// The optimizer's update of the weights, and its state.
    pub update: Duration,
}

/// [`train_epoch`], adding the time of each phase of each step to `times`.
pub fn train_epoch_timed(
    network: &mut Network,
    optimizer: &mut Optimizer,
    votes: &Votes,
    rows: &Tensor,
    batch_size: i64,
    mut on_batch: impl FnMut(i64) -> std::ops::ControlFlow<()>,
    times: &mut StepTimes,
) -> f64 {
    flush_denormals();
    let n = rows.size()[0];
    let order = rows.index_select(0, &Tensor::randperm(n, (Kind::Int64, rows.device())));
    let mut loss_sum = 0.0;
    let mut start = 0;
    while start < n {
        let len = batch_size.min(n - start);
        let mut clock = Instant::now();
        let mut lap = |phase: &mut Duration| {
            let now = Instant::now();
            *phase += now - clock;
            clock = now;
        };
        let (batch, labels) = votes.select(&order.narrow(0, start, len));
        let batch = network.with_id_dropout(batch);
        lap(&mut times.batch);
        // Gradients written by hand where the variant has them, else autograd's.
        let (loss, gradients) = match network.explicit_pass(&batch, &labels) {
            Some(pass) => {
                lap(&mut times.forward);
                let loss = pass.loss.shallow_clone();
                (loss, Some(pass.backward()))
            }
            None => {
                let loss = network.loss(&batch, &labels);
                lap(&mut times.forward);
                loss.backward();
                (loss, None)
            }
        };
        lap(&mut times.backward);
        loss_sum += loss.double_value(&[]) * len as f64;
        lap(&mut times.readout);
        match gradients {
            Some(gradients) => optimizer.apply(network, &gradients),
            None => optimizer.step(network),
        }
        lap(&mut times.update);
        times.steps += 1;
        start += len;
        if on_batch(len).is_break() {
            break;
        }
    }
    if start == 0 {
        f64::NAN
    } else {
        loss_sum / start as f64
    }
}

/// Predictions for `rows` of `votes`, in blocks, without a graph.
pub fn predict(network: &Network, votes: &Votes, rows: &Tensor) -> Vec<f32> {
    const BLOCK: i64 = 1 << 16;
    let n = rows.size()[0];
    let mut out = Vec::with_capacity(n as usize);
    let mut start = 0;
    while start < n {
        let len = BLOCK.min(n - start);
        let (batch, _) = votes.select(&rows.narrow(0, start, len));
        let scores = network.predict(&batch).to_device(Device::Cpu);
        let mut block = vec![0f32; len as usize];
        scores.copy_data(&mut block, len as usize);
        out.extend_from_slice(&block);
        start += len;
    }
    out
}

/// Labels of `rows`, on the host.
pub fn labels_of(votes: &Votes, rows: &Tensor) -> Vec<f32> {
    let labels = votes.labels.index_select(0, rows).to_device(Device::Cpu);
    let n = rows.size()[0] as usize;
    let mut out = vec![0f32; n];
    labels.copy_data(&mut out, n);
    out
}

/// Treats subnormal floats as zero in this thread's arithmetic, as PyTorch's
/// `set_flush_denormal(True)` does. Weight decay and Adam's small steps drive many weights and
/// moments toward zero; once they are subnormal, every product with them takes the processor's
/// slow path, and MKL's matrix products over them ran 5× slower (the tuned network at 2 M votes
/// spent half its epoch in one of them). Values that small change no prediction. Each thread that
/// trains calls it (the control register is per thread); with `trainer.threads` above 1,
/// libtorch's own worker threads keep subnormals, as they do in PyTorch. Every epoch starts with it.
pub fn flush_denormals() {
    #[cfg(target_arch = "x86_64")]
    {
        // MXCSR bit 15 (flush to zero) and bit 6 (denormals are zero).
        let mut csr: u32 = 0;
        // SAFETY: reads and writes only this thread's SSE control register, and only the two
        // bits that govern subnormals; no memory but the local `csr` is touched.
        unsafe {
            std::arch::asm!("stmxcsr [{0}]", in(reg) &mut csr, options(nostack, preserves_flags));
            csr |= 0x8040;
            std::arch::asm!("ldmxcsr [{0}]", in(reg) &csr, options(nostack, preserves_flags));
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        // FPCR bit 24 (flush to zero).
        // SAFETY: reads and writes only this thread's floating-point control register.
        unsafe {
            let mut fpcr: u64;
            std::arch::asm!("mrs {0}, fpcr", out(reg) fpcr, options(nomem, nostack, preserves_flags));
            fpcr |= 1 << 24;
            std::arch::asm!("msr fpcr, {0}", in(reg) fpcr, options(nomem, nostack, preserves_flags));
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn subnormal_products_flush_to_zero() {
        let tiny = std::hint::black_box(f32::MIN_POSITIVE);
        let half = std::hint::black_box(0.5f32);
        assert!((tiny * half) > 0.0, "subnormal before");
        std::thread::spawn(move || {
            super::flush_denormals();
            assert_eq!(std::hint::black_box(tiny) * std::hint::black_box(half), 0.0);
        })
        .join()
        .unwrap();
    }
}
