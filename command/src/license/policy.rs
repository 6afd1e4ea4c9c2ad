//! The license policy: per tier, entitlements, the installation limit, the daily
//! validation quota and whether perpetual licenses may be issued. Read from the TOML file named by `POLICY_FILE`, or the built-in
//! `policy/default.toml`. A bad file stops start-up with a message naming the line.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use keyledger_events::license::Tier;
use serde::Deserialize;

pub const BUILT_IN: &str = include_str!("../../../policy/default.toml");

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TierPolicy {
    pub entitlements: BTreeSet<String>,
    pub max_installations: u32,
    /// `None` is unlimited.
    pub validations_per_day: Option<u64>,
    /// Whether a license of the tier may be issued without an end (`perpetual`).
    pub allow_perpetual: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    free: TierPolicy,
    basic: TierPolicy,
    pro: TierPolicy,
    enterprise: TierPolicy,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    tiers: BTreeMap<Tier, TierFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TierFile {
    entitlements: Vec<String>,
    max_installations: u32,
    validations_per_day: Quota,
    #[serde(default = "allowed")]
    allow_perpetual: bool,
}

fn allowed() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Quota {
    Limit(u64),
    Word(String),
}

impl Policy {
    /// Parses a policy; the error names the line (TOML and shape errors) or the missing tier.
    pub fn parse(text: &str) -> Result<Policy, String> {
        let file: PolicyFile = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut tiers = BTreeMap::new();
        for (tier, entry) in file.tiers {
            let validations_per_day = match entry.validations_per_day {
                Quota::Limit(n) => Some(n),
                Quota::Word(word) if word == "unlimited" => None,
                Quota::Word(word) => {
                    return Err(format!(
                        "tiers.{}.validations_per_day: `{word}` is neither a number nor \"unlimited\"",
                        tier.as_str()
                    ));
                }
            };
            for name in &entry.entitlements {
                if name.is_empty() || name.len() > 128 {
                    return Err(format!(
                        "tiers.{}.entitlements: names must be 1 to 128 characters",
                        tier.as_str()
                    ));
                }
            }
            tiers.insert(
                tier,
                TierPolicy {
                    entitlements: entry.entitlements.into_iter().collect(),
                    max_installations: entry.max_installations,
                    validations_per_day,
                    allow_perpetual: entry.allow_perpetual,
                },
            );
        }
        let mut take = |tier: Tier| {
            tiers.remove(&tier).ok_or_else(|| {
                format!(
                    "tier `{}` is missing: add a [tiers.{}] table",
                    tier.as_str(),
                    tier.as_str()
                )
            })
        };
        Ok(Policy {
            free: take(Tier::Free)?,
            basic: take(Tier::Basic)?,
            pro: take(Tier::Pro)?,
            enterprise: take(Tier::Enterprise)?,
        })
    }

    pub fn built_in() -> Policy {
        // The built-in policy is checked by a test; an empty policy would only make every
        // feature check fail, never crash.
        Policy::parse(BUILT_IN).unwrap_or_else(|_| {
            let empty = TierPolicy {
                entitlements: BTreeSet::new(),
                max_installations: 1,
                validations_per_day: Some(0),
                allow_perpetual: false,
            };
            Policy {
                free: empty.clone(),
                basic: empty.clone(),
                pro: empty.clone(),
                enterprise: empty,
            }
        })
    }

    /// Reads `path`; the error says which file and where.
    pub fn load(path: &Path) -> Result<Policy, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the policy file {}: {e}", path.display()))?;
        Policy::parse(&text).map_err(|e| format!("invalid policy file {}: {e}", path.display()))
    }

    pub fn tier(&self, tier: Tier) -> &TierPolicy {
        match tier {
            Tier::Free => &self.free,
            Tier::Basic => &self.basic,
            Tier::Pro => &self.pro,
            Tier::Enterprise => &self.enterprise,
        }
    }

    /// The tier's entitlements plus the license's own.
    pub fn entitlements<S: AsRef<str>>(&self, tier: Tier, extra: &[S]) -> BTreeSet<String> {
        let mut all = self.tier(tier).entitlements.clone();
        all.extend(extra.iter().map(|e| e.as_ref().to_owned()));
        all
    }

    /// Whether a license of `tier` with its own entitlements `extra` may use `feature`.
    pub fn entitled<S: AsRef<str>>(&self, tier: Tier, extra: &[S], feature: &str) -> bool {
        self.tier(tier).entitlements.contains(feature)
            || extra.iter().any(|e| e.as_ref() == feature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_policy_parses() {
        let policy = Policy::parse(BUILT_IN).unwrap();
        assert_eq!(policy.tier(Tier::Basic).max_installations, 3);
        assert_eq!(policy.tier(Tier::Enterprise).validations_per_day, None);
        assert!(policy.tier(Tier::Pro).entitlements.contains("export"));
    }

    #[test]
    fn a_syntax_error_names_its_line() {
        let text = BUILT_IN.replace("max_installations = 3", "max_installations = = 3");
        let error = Policy::parse(&text).unwrap_err();
        assert!(error.contains("line 17"), "{error}");
    }

    #[test]
    fn a_wrong_type_or_unknown_field_names_its_line() {
        let text = BUILT_IN.replace("max_installations = 10\n", "max_installations = \"ten\"\n");
        let error = Policy::parse(&text).unwrap_err();
        assert!(error.contains("line 22"), "{error}");
        let text = BUILT_IN.replace("[tiers.pro]", "[tiers.pro]\ncolour = \"red\"");
        assert!(Policy::parse(&text).unwrap_err().contains("line 21"));
    }

    #[test]
    fn an_unknown_tier_or_a_missing_one_is_named() {
        let text = BUILT_IN.replace("[tiers.free]", "[tiers.gold]");
        assert!(Policy::parse(&text).unwrap_err().contains("gold"));
        let text = BUILT_IN.replace(
            "validations_per_day = \"unlimited\"",
            "validations_per_day = \"lots\"",
        );
        assert!(Policy::parse(&text).unwrap_err().contains("lots"));
    }

    #[test]
    fn a_tier_allows_perpetual_licenses_unless_its_policy_says_otherwise() {
        let policy = Policy::parse(BUILT_IN).unwrap();
        assert!(!policy.tier(Tier::Free).allow_perpetual);
        assert!(policy.tier(Tier::Enterprise).allow_perpetual);
        // A policy file written before the setting existed still parses: every tier allows them.
        let older = BUILT_IN.replace("allow_perpetual = false\n", "");
        let policy = Policy::parse(&older).unwrap();
        assert!(policy.tier(Tier::Free).allow_perpetual);
        let wrong = BUILT_IN.replace("allow_perpetual = false", "allow_perpetual = \"no\"");
        let error = Policy::parse(&wrong).unwrap_err();
        assert!(error.contains("line 13"), "{error}");
    }

    #[test]
    fn a_license_adds_its_own_entitlements_to_its_tiers() {
        let policy = Policy::built_in();
        let all = policy.entitlements(Tier::Free, &["sso".to_owned()]);
        assert!(all.contains("core") && all.contains("sso"));
    }
}
