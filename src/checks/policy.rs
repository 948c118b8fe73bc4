//! Policy: which checks fail, warn or are off. The defaults follow the target platform's guide;
//! a pipeline for a cloud that accepts UEFI or GPT turns those checks off or into warnings.
//!
//! A policy file is TOML:
//! ```toml
//! strict = false               # true: warnings fail too
//! [checks]
//! "boot.firmware" = "off"      # fail | warn | off
//! "disk.partition-table" = "warn"
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::{CheckResult, Status, CHECK_IDS};
use crate::error::{Error, Result};

/// What a policy does with a check's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Failures fail (and, for a check that only ever warns, warnings fail).
    Fail,
    /// Failures become warnings.
    Warn,
    /// The check is not reported as failing or warning: it is shown as skipped.
    Off,
}

impl std::str::FromStr for Level {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "fail" => Ok(Level::Fail),
            "warn" => Ok(Level::Warn),
            "off" => Ok(Level::Off),
            _ => Err(Error::Other(format!(
                "policy level \"{s}\" is not one of fail, warn, off"
            ))),
        }
    }
}

/// A policy: per-check levels and strictness.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    #[serde(default)]
    pub strict: bool,
    #[serde(default)]
    pub checks: BTreeMap<String, Level>,
}

impl Policy {
    /// Read a policy file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path.display(), e))?;
        let p: Policy =
            toml::from_str(&text).map_err(|e| Error::Other(format!("{}: {e}", path.display())))?;
        p.validate(&path.display().to_string())?;
        Ok(p)
    }

    /// Set a check's level from a `CHECK=LEVEL` command-line argument.
    pub fn set(&mut self, arg: &str) -> Result<()> {
        let (id, level) = arg
            .split_once('=')
            .ok_or_else(|| Error::Other(format!("--set {arg}: expected CHECK=fail|warn|off")))?;
        self.checks.insert(id.to_string(), level.parse()?);
        self.validate("--set")
    }

    fn validate(&self, origin: &str) -> Result<()> {
        for id in self.checks.keys() {
            if !CHECK_IDS.contains(&id.as_str()) {
                return Err(Error::Other(format!(
                    "{origin}: unknown check \"{id}\" (known: {})",
                    CHECK_IDS.join(", ")
                )));
            }
        }
        Ok(())
    }

    /// Apply the policy to one result.
    pub fn apply(&self, mut r: CheckResult) -> CheckResult {
        match (self.checks.get(&r.id), r.status) {
            (Some(Level::Off), Status::Fail | Status::Warn | Status::Pass) => {
                r.message = format!("{} (check turned off by policy)", r.message);
                r.status = Status::Skip;
                r.hint = None;
            }
            (Some(Level::Warn), Status::Fail) => {
                r.status = Status::Warn;
                r.message = format!("{} (a warning by policy)", r.message);
            }
            (Some(Level::Fail), Status::Warn) => {
                r.status = Status::Fail;
                r.message = format!("{} (a failure by policy)", r.message);
            }
            _ => {}
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_change_results() {
        let p: Policy = toml::from_str(
            "strict = true\n[checks]\n\"boot.firmware\" = \"off\"\n\"disk.partition-table\" = \"warn\"\n\"drivers.virtio\" = \"fail\"\n",
        )
        .unwrap();
        p.validate("test").unwrap();
        assert!(p.strict);
        let r = p.apply(CheckResult::fail("boot.firmware", "EFI", "x"));
        assert_eq!(r.status, Status::Skip);
        let r = p.apply(CheckResult::fail("disk.partition-table", "GPT", "x"));
        assert_eq!(r.status, Status::Warn);
        let r = p.apply(CheckResult::warn("drivers.virtio", "no netkvm", "x"));
        assert_eq!(r.status, Status::Fail);
        let r = p.apply(CheckResult::fail("software.conflicts", "VMware", "x"));
        assert_eq!(r.status, Status::Fail);
    }

    #[test]
    fn unknown_check_and_level_are_errors() {
        let p: Policy = toml::from_str("[checks]\n\"boot.firmwre\" = \"off\"\n").unwrap();
        assert!(p
            .validate("f")
            .unwrap_err()
            .to_string()
            .contains("boot.firmwre"));
        assert!(toml::from_str::<Policy>("[checks]\n\"boot.firmware\" = \"maybe\"\n").is_err());
        let mut p = Policy::default();
        assert!(p.set("boot.firmware").is_err());
        p.set("boot.firmware=off").unwrap();
    }
}
