//! Greedy decoding shared by the VLMs: pick the top token (or the one the model's generation config
//! forces first), stream it, stop on the end token, the token limit or the wall-clock budget.

use std::time::{Duration, Instant};

use super::contract::{StopReason, VlmError};

/// When to stop.
#[derive(Debug, Clone)]
pub struct Limits<'a> {
    pub max_new_tokens: usize,
    pub time_budget: Option<Duration>,
    /// The budget counts from here (the start of the whole generation, image encoding included).
    pub started: Instant,
    pub stop_ids: &'a [u32],
    /// The first new token, whatever the logits say (Florence-2's BART config forces `<s>`, as
    /// transformers' `forced_bos_token_id` does). Its logits are still computed and seen by `step`'s
    /// caller, so traces keep them.
    pub forced_first: Option<u32>,
}

/// What a greedy run produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Greedy {
    /// New ids, without the stop token.
    pub ids: Vec<u32>,
    pub stop: StopReason,
    /// How many times `step` ran (tokens fed back after the prompt).
    pub steps: usize,
}

/// Index of the largest value; the first one on ties (as torch and numpy argmax), NaN never wins.
pub fn argmax(v: &[f32]) -> Option<usize> {
    let mut best: Option<(usize, f32)> = None;
    for (i, &x) in v.iter().enumerate() {
        if x.is_nan() {
            continue;
        }
        if best.is_none_or(|(_, b)| x > b) {
            best = Some((i, x));
        }
    }
    best.map(|(i, _)| i)
}

/// Runs greedy decoding from `first` (the logits after the prompt). `step(id)` feeds `id` to the
/// model and returns the logits for the next position; `on_token(id)` sees each kept id as it is
/// chosen.
pub fn greedy(
    first: Vec<f32>,
    limits: &Limits<'_>,
    step: &mut dyn FnMut(u32) -> Result<Vec<f32>, VlmError>,
    on_token: &mut dyn FnMut(u32) -> Result<(), VlmError>,
) -> Result<Greedy, VlmError> {
    let mut ids = Vec::new();
    let mut steps = 0;
    let mut logits = first;
    if limits.max_new_tokens == 0 {
        return Ok(Greedy {
            ids,
            stop: StopReason::MaxTokens,
            steps,
        });
    }
    loop {
        let forced = limits.forced_first.filter(|_| ids.is_empty() && steps == 0);
        let id = match forced {
            Some(id) => id,
            None => argmax(&logits).ok_or_else(|| VlmError::Run {
                stage: "decode",
                reason: format!("no usable logits (length {}, all NaN?)", logits.len()),
            })? as u32,
        };
        if limits.stop_ids.contains(&id) {
            return Ok(Greedy {
                ids,
                stop: StopReason::EndOfText,
                steps,
            });
        }
        ids.push(id);
        on_token(id)?;
        if ids.len() >= limits.max_new_tokens {
            return Ok(Greedy {
                ids,
                stop: StopReason::MaxTokens,
                steps,
            });
        }
        if limits
            .time_budget
            .is_some_and(|b| limits.started.elapsed() >= b)
        {
            return Ok(Greedy {
                ids,
                stop: StopReason::TimeBudget,
                steps,
            });
        }
        logits = step(id)?;
        steps += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(
        table: Vec<Vec<f32>>,
        max: usize,
        budget: Option<Duration>,
        stop: &[u32],
    ) -> (Greedy, Vec<u32>) {
        let mut rows = table.into_iter();
        let first = rows.next().unwrap();
        let mut seen = Vec::new();
        let g = greedy(
            first,
            &Limits {
                max_new_tokens: max,
                time_budget: budget,
                started: Instant::now(),
                stop_ids: stop,
                forced_first: None,
            },
            &mut |_| {
                rows.next().ok_or(VlmError::Run {
                    stage: "test",
                    reason: "ran past the table".into(),
                })
            },
            &mut |id| {
                seen.push(id);
                Ok(())
            },
        )
        .unwrap();
        (g, seen)
    }

    #[test]
    fn stops_on_the_stop_token_without_keeping_it() {
        let t = vec![
            vec![0.0, 2.0, 1.0],
            vec![5.0, 0.0, 1.0],
            vec![0.0, 0.0, 9.0],
        ];
        let (g, seen) = run(t, 10, None, &[2]);
        assert_eq!(g.ids, vec![1, 0]);
        assert_eq!(seen, vec![1, 0]);
        assert_eq!(g.stop, StopReason::EndOfText);
        assert_eq!(g.steps, 2);
    }

    #[test]
    fn stops_at_max_tokens_without_an_extra_step() {
        let t = vec![vec![1.0, 0.0], vec![1.0, 0.0]];
        let (g, _) = run(t, 2, None, &[]);
        assert_eq!(g.ids, vec![0, 0]);
        assert_eq!(g.stop, StopReason::MaxTokens);
        assert_eq!(g.steps, 1);
        let (g, _) = run(vec![vec![1.0]], 0, None, &[]);
        assert!(g.ids.is_empty());
    }

    #[test]
    fn a_spent_budget_stops_after_the_first_token() {
        let t = vec![vec![1.0, 0.0], vec![1.0, 0.0]];
        let (g, _) = run(t, 10, Some(Duration::ZERO), &[]);
        assert_eq!(g.ids, vec![0]);
        assert_eq!(g.stop, StopReason::TimeBudget);
    }

    #[test]
    fn a_forced_first_token_wins_over_the_logits_once() {
        let t = vec![
            vec![0.0, 9.0, 0.0],
            vec![0.0, 9.0, 0.0],
            vec![0.0, 0.0, 9.0],
        ];
        let mut rows = t.into_iter();
        let first = rows.next().unwrap();
        let g = greedy(
            first,
            &Limits {
                max_new_tokens: 10,
                time_budget: None,
                started: Instant::now(),
                stop_ids: &[2],
                forced_first: Some(0),
            },
            &mut |_| Ok(rows.next().unwrap()),
            &mut |_| Ok(()),
        )
        .unwrap();
        assert_eq!(g.ids, vec![0, 1]);
        assert_eq!(g.stop, StopReason::EndOfText);
    }

    #[test]
    fn argmax_takes_the_first_maximum_and_skips_nan() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0]), Some(1));
        assert_eq!(argmax(&[f32::NAN, -1.0]), Some(1));
        assert_eq!(argmax(&[f32::NAN]), None);
        assert_eq!(argmax(&[]), None);
    }
}
