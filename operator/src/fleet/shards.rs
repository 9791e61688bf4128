//! A namespace's compiled policies spread over ConfigMaps `opname-recorder-policies-NN`, since one
//! object holds at most 1 MiB (about 4,000 users) and an organisation may have 20,000. Each
//! policy goes to the shard its name hashes to, so a change to one policy rewrites one shard;
//! the shard count doubles (moving about half the policies once) when a shard would pass its
//! budget. The recorder reads every shard as a file of its `policiesDir`. Pure.

use opname_model::config as rc;

use super::FleetError;

/// Shards are named `{SHARD_PREFIX}{NN}`.
pub const SHARD_PREFIX: &str = "opname-recorder-policies-";
/// The key of a shard's policies in its ConfigMap.
pub const SHARD_KEY: &str = "policies.yaml";
/// Shards the recorder Pod projects (optional: only those that exist appear). 64 shards of
/// [`SHARD_BUDGET`] hold about 300,000 users.
pub const MAX_SHARDS: usize = 64;
/// Bytes of YAML a shard aims to stay under, well below the 1 MiB ConfigMap limit so that one
/// large policy or an uneven hash never reaches it.
pub const SHARD_BUDGET: usize = 512 * 1024;

/// The name of shard `k`.
pub fn shard_name(k: usize) -> String {
    format!("{SHARD_PREFIX}{k:02}")
}

/// FNV-1a of a policy's name: stable across processes and releases (std's hasher is not).
fn slot(name: &str, shards: usize) -> usize {
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    // Shards are at most MAX_SHARDS, so the remainder fits.
    usize::try_from(hash % shards as u64).unwrap_or(0)
}

/// The YAML of each shard, `[0]` first; at least one (possibly empty) so the recorder always has
/// a directory to read.
pub fn shards(policies: &[rc::Policy]) -> Result<Vec<String>, FleetError> {
    let sizes: Vec<usize> = policies
        .iter()
        .map(|p| {
            serde_saphyr::to_string(&[p])
                .map(|y| y.len())
                .map_err(|e| FleetError::Render(e.to_string()))
        })
        .collect::<Result<_, _>>()?;
    let total: usize = sizes.iter().sum();
    let mut count = total.div_ceil(SHARD_BUDGET).max(1).next_power_of_two();
    loop {
        let mut bytes = vec![0usize; count];
        for (p, size) in policies.iter().zip(&sizes) {
            bytes[slot(&p.name, count)] += size;
        }
        if bytes.iter().all(|b| *b <= SHARD_BUDGET) || count >= MAX_SHARDS {
            break;
        }
        count *= 2;
    }
    let count = count.min(MAX_SHARDS);
    let mut lists: Vec<Vec<&rc::Policy>> = vec![Vec::new(); count];
    for p in policies {
        lists[slot(&p.name, count)].push(p);
    }
    lists
        .iter()
        .map(|list| {
            let yaml =
                serde_saphyr::to_string(list).map_err(|e| FleetError::Render(e.to_string()))?;
            // Past the API's limit no apply could succeed: say so rather than fail every reconcile.
            if yaml.len() > 1024 * 1024 - 4096 {
                return Err(FleetError::TooManyPolicies(policies.len()));
            }
            Ok(yaml)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(i: usize) -> rc::Policy {
        rc::Policy {
            name: format!("user-{i}"),
            user: format!("user-{i}@acme.example"),
            identities: vec![
                format!("sip:user-{i}@pbx.acme.example"),
                format!("tel:+3120{i:07}"),
                format!("{}", 10_000 + i),
            ],
            mode: rc::Mode::Always,
            on_demand: None,
            retention_days: 90,
            suspended: false,
            notice: None,
        }
    }

    #[test]
    fn twenty_thousand_users_fit_in_shards_each_within_the_limit() {
        let all: Vec<_> = (0..20_000).map(policy).collect();
        let out = shards(&all).unwrap();
        assert!(out.len() > 1 && out.len() <= MAX_SHARDS, "{}", out.len());
        assert!(
            out.iter().all(|y| y.len() <= SHARD_BUDGET),
            "each within its budget"
        );
        let back: Vec<rc::Policy> = out
            .iter()
            .flat_map(|y| serde_saphyr::from_str::<Vec<rc::Policy>>(y).unwrap())
            .collect();
        assert_eq!(back.len(), all.len(), "every policy once");
    }

    #[test]
    fn a_policy_change_rewrites_one_shard() {
        let mut all: Vec<_> = (0..5_000).map(policy).collect();
        let before = shards(&all).unwrap();
        all[1234].retention_days = 30;
        let after = shards(&all).unwrap();
        assert_eq!(before.len(), after.len());
        let changed = before.iter().zip(&after).filter(|(a, b)| a != b).count();
        assert_eq!(changed, 1);
        assert_eq!(shards(&[]).unwrap().len(), 1, "an empty shard, never none");
    }
}
