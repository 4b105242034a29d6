//! Model-based op-sequence test: random sequences of appends, rolls, retention, DeleteRecords,
//! truncation, config changes, clean and unclean restarts, checked after every step against a
//! plain vector of batches.

mod common;

use std::path::PathBuf;

use common::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use shardlog_storage::{LogConfig, PartitionLog, StorageError};

struct Model {
    /// Every batch still in the log, including ones below the log start offset.
    batches: Vec<ModelBatch>,
    lso: i64,
    leo: i64,
}

impl Model {
    fn truncate_to(&mut self, offset: i64) {
        if offset >= self.leo {
            return;
        }
        let c = containing(&self.batches, offset);
        if offset < self.lso || c.is_none_or(|c| self.batches[c].base < self.lso) {
            let start = offset.min(self.lso);
            self.batches.clear();
            self.lso = start;
            self.leo = start;
        } else {
            let c = c.unwrap();
            self.leo = self.batches[c].base;
            self.batches.truncate(c);
        }
    }
}

struct Sim {
    rng: StdRng,
    dir: PathBuf,
    cfg: LogConfig,
    clock: i64,
    model: Model,
}

impl Sim {
    fn random_config(&mut self) -> LogConfig {
        let r = &mut self.rng;
        LogConfig {
            // Mostly tiny segments (many rolls); sometimes ones larger than a header-read chunk.
            segment_bytes: if r.gen_bool(0.8) {
                r.gen_range(150..3_000)
            } else {
                r.gen_range(3_000..60_000)
            },
            index_interval_bytes: r.gen_range(0..600),
            flush_messages: if r.gen_bool(0.2) {
                r.gen_range(1..20)
            } else {
                u64::MAX
            },
            ..self.cfg
        }
    }

    async fn step(&mut self, log: &mut Option<PartitionLog>, step: usize) {
        let l = log.as_ref().unwrap();
        let op = self.rng.gen_range(0..100);
        match op {
            0..=44 => {
                let n = self.rng.gen_range(1..=4);
                let mut batches = Vec::new();
                let mut base = self.model.leo;
                for _ in 0..n {
                    self.clock += self.rng.gen_range(0..20);
                    let ts = if self.rng.gen_bool(0.05) {
                        -1
                    } else {
                        self.clock + self.rng.gen_range(-40..40)
                    };
                    let max_value = if self.rng.gen_bool(0.05) { 4_000 } else { 120 };
                    let b = random_batch(&mut self.rng, base, ts, 5, max_value);
                    base = b.last + 1;
                    batches.push(b);
                }
                append(l, &batches).await.unwrap();
                self.model.leo = base;
                self.model.batches.extend(batches);
            }
            45..=49 => l.roll().await.unwrap(),
            50..=54 => {
                let total: u64 = l.size_bytes();
                let cfg = LogConfig {
                    retention_ms: if self.rng.gen_bool(0.5) {
                        self.rng.gen_range(0..500)
                    } else {
                        -1
                    },
                    retention_bytes: if self.rng.gen_bool(0.5) {
                        self.rng.gen_range(0..=total as i64)
                    } else {
                        -1
                    },
                    ..l.config()
                };
                l.set_config(cfg).unwrap();
                let before = l.segments();
                let now = self.clock + self.rng.gen_range(-100..300);
                let deleted = l.enforce_retention(now).await.unwrap();
                let after = l.segments();
                assert_eq!(after.len(), before.len() - deleted);
                assert_eq!(after[..], before[deleted..]);
                let lso = l.log_start_offset();
                assert!(lso >= self.model.lso);
                if lso != self.model.lso {
                    assert_eq!(lso, after[0].base_offset);
                }
                self.model.lso = lso;
                l.set_config(LogConfig {
                    retention_ms: -1,
                    retention_bytes: -1,
                    ..cfg
                })
                .unwrap();
            }
            55..=59 => {
                let offset = self.rng.gen_range(self.model.lso..=self.model.leo);
                let lso = l.delete_records_before(offset).await.unwrap();
                assert_eq!(lso, offset.max(self.model.lso));
                self.model.lso = lso;
                let first = l.segments()[0];
                assert!(
                    first.next_offset > lso
                        || first.next_offset == self.model.leo && first.size_bytes == 0
                );
                let too_far = l.delete_records_before(self.model.leo + 1).await;
                assert!(matches!(
                    too_far,
                    Err(StorageError::OffsetOutOfRange { .. })
                ));
            }
            60..=65 => {
                let lo = (self.model.lso - 3).max(0);
                let offset = self.rng.gen_range(lo..=self.model.leo + 2);
                let leo = l.truncate_to(offset).await.unwrap();
                self.model.truncate_to(offset);
                assert_eq!(leo, self.model.leo, "truncate_to({offset})");
            }
            66..=71 => {
                let old = log.take().unwrap();
                old.close().await.unwrap();
                *log = Some(
                    PartitionLog::open(self.dir.clone(), self.cfg, true)
                        .await
                        .unwrap(),
                );
            }
            72..=77 => {
                // Unclean stop: the page cache keeps every completed write (kill -9).
                drop(log.take());
                *log = Some(
                    PartitionLog::open(self.dir.clone(), self.cfg, false)
                        .await
                        .unwrap(),
                );
            }
            78..=81 => {
                self.cfg = self.random_config();
                l.set_config(self.cfg).unwrap();
            }
            82..=84 => {
                let cfg = LogConfig {
                    segment_ms: self.rng.gen_range(1..200),
                    ..l.config()
                };
                l.set_config(cfg).unwrap();
                let _ = l
                    .maybe_roll_by_time(self.clock + self.rng.gen_range(0..300))
                    .await
                    .unwrap();
                l.set_config(self.cfg).unwrap();
            }
            85..=87 => l.flush().await.unwrap(),
            _ => {
                // Reads only (the check below).
            }
        }
        let l = log.as_ref().unwrap();
        self.check(l, step).await;
    }

    async fn check(&mut self, l: &PartitionLog, step: usize) {
        let m = &self.model;
        assert_eq!(l.log_start_offset(), m.lso, "step {step}: log start");
        assert_eq!(l.log_end_offset(), m.leo, "step {step}: log end");
        let segs = l.segments();
        assert!(segs[0].base_offset <= m.lso);
        assert_eq!(segs.last().unwrap().next_offset, m.leo);
        for w in segs.windows(2) {
            assert_eq!(
                w[0].next_offset, w[1].base_offset,
                "step {step}: segments not contiguous"
            );
        }
        let physical: u64 = m
            .batches
            .iter()
            .filter(|b| b.base >= segs[0].base_offset)
            .map(|b| b.bytes.len() as u64)
            .sum();
        assert_eq!(l.size_bytes(), physical, "step {step}: size");
        assert_eq!(segs.iter().map(|s| s.size_bytes).sum::<u64>(), physical);
        let bases: Vec<i64> = segs.iter().map(|s| s.base_offset).collect();

        // Reads at random offsets, limits and high watermarks.
        let mut offsets = vec![m.lso, m.leo];
        for _ in 0..6 {
            offsets.push(self.rng.gen_range(m.lso..=m.leo));
        }
        for offset in offsets {
            let max_bytes = match self.rng.gen_range(0..4) {
                0 => 0,
                1 => self.rng.gen_range(0..300),
                2 => self.rng.gen_range(0..3_000),
                _ => 1 << 20,
            };
            let hw = if self.rng.gen_bool(0.6) {
                m.leo
            } else {
                self.rng.gen_range(offset..=m.leo)
            };
            check_read(l, &m.batches, &bases, offset, max_bytes, hw).await;
        }
        if m.lso > 0 {
            let r = l.read(m.lso - 1, 100, m.leo).await;
            assert!(
                matches!(r, Err(StorageError::OffsetOutOfRange { .. })),
                "step {step}: below log start"
            );
        }
        let r = l.read(m.leo + 1, 100, m.leo + 5).await;
        assert!(
            matches!(r, Err(StorageError::OffsetOutOfRange { .. })),
            "step {step}: past log end"
        );

        // ListOffsets by timestamp against brute force.
        for _ in 0..3 {
            let ts = self.rng.gen_range(0..self.clock + 100);
            let got = l.offset_for_timestamp(ts).await.unwrap();
            assert_eq!(
                got,
                brute_offset_for_timestamp(&m.batches, m.lso, ts),
                "step {step}: timestamp {ts}"
            );
        }

        if self.rng.gen_bool(0.1) {
            let from = self.rng.gen_range(m.lso..=m.leo);
            let got: Vec<(i64, i64)> = headers_from(l, from)
                .await
                .iter()
                .map(|h| (h.base_offset, h.last_offset()))
                .collect();
            let want: Vec<(i64, i64)> = match containing(&m.batches, from.max(m.lso)) {
                Some(c) => m.batches[c..].iter().map(|b| (b.base, b.last)).collect(),
                None => Vec::new(),
            };
            assert_eq!(got, want, "step {step}: scan_headers({from})");
        }
    }
}

fn run_seed(seed: u64, steps: usize) {
    run(move || async move {
        let tmp = tempdir();
        let dir = tmp.path().join("topic-0");
        let mut sim = Sim {
            rng: StdRng::seed_from_u64(seed),
            dir: dir.clone(),
            cfg: tiny_config(1_000, 200),
            clock: 1_000_000,
            model: Model {
                batches: Vec::new(),
                lso: 0,
                leo: 0,
            },
        };
        sim.cfg = sim.random_config();
        let mut log = Some(PartitionLog::open(dir, sim.cfg, true).await.unwrap());
        for step in 0..steps {
            sim.step(&mut log, step).await;
        }
        log.take().unwrap().close().await.unwrap();
    });
}

fn run_seeds(seeds: std::ops::Range<u64>) {
    for seed in seeds {
        run_seed(seed, 500);
    }
}

// Four groups so that they run in parallel.
#[test]
fn op_sequences_match_the_model_seeds_0_to_3() {
    run_seeds(0..4);
}

#[test]
fn op_sequences_match_the_model_seeds_4_to_7() {
    run_seeds(4..8);
}

#[test]
fn op_sequences_match_the_model_seeds_8_to_11() {
    run_seeds(8..12);
}

#[test]
fn op_sequences_match_the_model_seeds_12_to_15() {
    run_seeds(12..16);
}

/// Many more seeds: `cargo test -p shardlog-storage --test model -- --ignored`
/// (`SHARDLOG_STRESS_SEEDS=n` sets how many).
#[test]
#[ignore]
fn op_sequences_match_the_model_stress() {
    let n = std::env::var("SHARDLOG_STRESS_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    run_seeds(1_000..1_000 + n);
}
