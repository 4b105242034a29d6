//! The fan-out every multi-partition handler uses: one message per owning shard, never one per
//! partition (ARCHITECTURE.md, "Invariants"), answers put back in request order.

use std::collections::HashMap;
use std::future::Future;
use std::rc::Rc;

use crate::runtime::shard_table::ShardId;
use crate::shard::Shard;

/// Sends each shard its share of `items` in one call and returns the answers in item order.
/// `f` runs on the owning shard with that shard's items (in order) and returns one answer each.
/// If a shard cannot be reached, its items get `lost`.
pub async fn scatter<T, R, F, Fut>(
    shard: &Rc<Shard>,
    items: Vec<(ShardId, T)>,
    lost: R,
    f: F,
) -> Vec<R>
where
    T: Send + 'static,
    R: Send + Clone + 'static,
    F: Fn(Rc<Shard>, Vec<T>) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = Vec<R>> + 'static,
{
    let n = items.len();
    let mut by_shard: HashMap<ShardId, (Vec<usize>, Vec<T>)> = HashMap::new();
    for (i, (owner, item)) in items.into_iter().enumerate() {
        let e = by_shard.entry(owner).or_default();
        e.0.push(i);
        e.1.push(item);
    }
    let mut calls = Vec::with_capacity(by_shard.len());
    let mut local = None;
    for (owner, (idx, part)) in by_shard {
        if owner == shard.id {
            local = Some((idx, part));
            continue;
        }
        let me = shard.clone();
        let f = f.clone();
        calls.push((
            idx,
            crate::runtime::rt::spawn(
                async move { me.invoke_on(owner, move |s| f(s, part)).await },
            ),
        ));
    }
    let mut out: Vec<Option<R>> = vec![None; n];
    if let Some((idx, part)) = local {
        let answers = f(shard.clone(), part).await;
        for (i, a) in idx.into_iter().zip(answers) {
            out[i] = Some(a);
        }
    }
    for (idx, call) in calls {
        if let Some(answers) = call.await {
            for (i, a) in idx.into_iter().zip(answers) {
                out[i] = Some(a);
            }
        }
    }
    out.into_iter()
        .map(|a| a.unwrap_or_else(|| lost.clone()))
        .collect()
}

/// `scatter` for work done one item at a time: `f` runs on each item's owning shard, in order.
pub async fn scatter_each<T, R, F, Fut>(
    shard: &Rc<Shard>,
    items: Vec<(ShardId, T)>,
    lost: R,
    f: F,
) -> Vec<R>
where
    T: Send + 'static,
    R: Send + Clone + 'static,
    F: Fn(Rc<Shard>, T) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = R> + 'static,
{
    scatter(shard, items, lost, move |s: Rc<Shard>, parts: Vec<T>| {
        let f = f.clone();
        async move {
            let mut out = Vec::with_capacity(parts.len());
            for p in parts {
                out.push(f(s.clone(), p).await);
            }
            out
        }
    })
    .await
}
