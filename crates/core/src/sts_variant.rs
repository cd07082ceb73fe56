//! Which STS endpoint variants (FIPS, dual-stack) a region has, and the one
//! check of a variant request that the sidecar (`--use-fips-endpoint`,
//! `--use-dualstack-endpoint`), the webhook's admission (the
//! `tempcreds.io/use-fips-endpoint` and `tempcreds.io/use-dualstack-endpoint`
//! annotations, through [`crate::SidecarConfig::validate`]) and the webhook's
//! cluster config (`useFipsEndpoint`, `useDualstackEndpoint`) all use.
//!
//! The URL itself is never built here: the sidecar hands the two settings to
//! the AWS SDK, whose endpoint resolver chooses it. The SDK's partition data
//! marks every partition as having FIPS and dual-stack endpoints, so for a
//! region without a FIPS STS endpoint (`eu-west-1`) it resolves a host that
//! does not exist (`sts-fips.eu-west-1.amazonaws.com`) and the pod would fail
//! at its first call. These checks refuse such a request up front, naming the
//! setting, the region and what is accepted.
//!
//! The facts, from AWS's own endpoint data (botocore's `endpoints.json`,
//! service `sts`, which lists a `fips` variant only for these regions) and
//! the IAM User Guide ("AWS STS Regions and endpoints", "Dual-stack endpoint
//! support"):
//!
//! - FIPS: [`FIPS_REGIONS`]: `us-east-1`, `us-east-2`, `us-west-1`,
//!   `us-west-2` (`sts-fips.REGION.amazonaws.com`) and the GovCloud regions
//!   `us-gov-east-1`, `us-gov-west-1`, whose regular STS endpoint is the
//!   FIPS one. No region of `aws-cn`, the ISO partitions or `aws-eusc`.
//! - Dual-stack (`sts.REGION.api.aws` and the partitions' equivalents): the
//!   partitions `aws`, `aws-cn`, `aws-us-gov` and `aws-eusc`; none in the ISO
//!   partitions (`aws-iso`, `aws-iso-b`, `aws-iso-e`, `aws-iso-f`).
//! - FIPS and dual-stack together: the commercial FIPS regions only
//!   (`sts-fips.REGION.api.aws`); AWS lists no FIPS dual-stack STS endpoint
//!   in GovCloud.

use std::fmt;

use crate::arn::Partition;
use crate::config::quoted;

/// The regions where AWS publishes a FIPS endpoint of STS.
pub const FIPS_REGIONS: [&str; 6] = [
    "us-east-1",
    "us-east-2",
    "us-west-1",
    "us-west-2",
    "us-gov-east-1",
    "us-gov-west-1",
];

/// The partitions where STS has dual-stack (IPv4 and IPv6) endpoints.
pub const DUAL_STACK_PARTITIONS: [Partition; 4] = [
    Partition::Aws,
    Partition::AwsCn,
    Partition::AwsUsGov,
    Partition::AwsEusc,
];

/// Whether STS has a FIPS endpoint in `region`.
pub fn has_fips(region: &str) -> bool {
    FIPS_REGIONS.contains(&region)
}

/// Whether STS has a dual-stack endpoint in `region`'s partition.
pub fn has_dual_stack(region: &str) -> bool {
    DUAL_STACK_PARTITIONS.contains(&Partition::of_region(region))
}

/// Whether STS has an endpoint that is both FIPS and dual-stack in `region`.
pub fn has_fips_dual_stack(region: &str) -> bool {
    has_fips(region) && has_dual_stack(region) && Partition::of_region(region) == Partition::Aws
}

/// The endpoint variants asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Variant {
    /// The FIPS endpoint.
    pub fips: bool,
    /// The dual-stack (IPv4 and IPv6) endpoint.
    pub dual_stack: bool,
}

impl Variant {
    /// What the variant is called in messages: `regional`, `FIPS`,
    /// `dual-stack` or `FIPS dual-stack`.
    pub fn describe(self) -> &'static str {
        match (self.fips, self.dual_stack) {
            (false, false) => "regional",
            (true, false) => "FIPS",
            (false, true) => "dual-stack",
            (true, true) => "FIPS dual-stack",
        }
    }
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

/// How the settings are named where they are checked: flags for the
/// sidecar, keys for the webhook's cluster config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Names {
    /// The FIPS setting.
    pub fips: &'static str,
    /// The dual-stack setting.
    pub dual_stack: &'static str,
    /// The region setting.
    pub region: &'static str,
    /// The custom STS endpoint setting.
    pub sts_endpoint: &'static str,
}

/// The sidecar's flags (the webhook reports them under the annotations).
pub const FLAG_NAMES: Names = Names {
    fips: "--use-fips-endpoint",
    dual_stack: "--use-dualstack-endpoint",
    region: "--region",
    sts_endpoint: "--sts-endpoint",
};

/// Which setting a [`VariantError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setting {
    /// The FIPS setting.
    Fips,
    /// The dual-stack setting.
    DualStack,
}

/// A variant request that cannot work. `message` says why and what is
/// accepted, naming the other settings involved; the caller names the
/// setting itself and its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VariantError {
    /// The setting at fault.
    pub setting: Setting,
    /// What is wrong and what is accepted.
    pub message: String,
}

fn list(items: &[&str]) -> String {
    items.join(", ")
}

/// Checks a request for `variant` with the given region and custom STS
/// endpoint. `region: None` (the sidecar takes it from the SDK's region
/// chain) is accepted: the SDK's resolver then decides, and `doctor` shows
/// what it gives. A region that is not a region name is left to the region
/// check. Never panics, whatever the input.
pub fn check_variant(
    variant: Variant,
    region: Option<&str>,
    sts_endpoint: Option<&str>,
    names: &Names,
) -> Vec<VariantError> {
    let mut errors = Vec::new();
    if let Some(endpoint) = sts_endpoint {
        for (on, setting, name) in [
            (variant.fips, Setting::Fips, names.fips),
            (variant.dual_stack, Setting::DualStack, names.dual_stack),
        ] {
            if on {
                errors.push(VariantError {
                    setting,
                    message: format!(
                        "cannot be combined with {} {}: a custom endpoint replaces the one {name} \
                         selects; accepted: one of the two (for a FIPS or dual-stack VPC endpoint, \
                         its URL in {} alone)",
                        names.sts_endpoint,
                        quoted(endpoint),
                        names.sts_endpoint
                    ),
                });
            }
        }
        return errors;
    }
    let Some(region) = region else {
        return errors;
    };
    if !crate::config::is_region(region) {
        return errors;
    }
    let partition = Partition::of_region(region);
    if variant.fips && !has_fips(region) {
        errors.push(VariantError {
            setting: Setting::Fips,
            message: format!(
                "STS has no FIPS endpoint in {} {} (partition {partition}); accepted: {} one of {}",
                names.region,
                quoted(region),
                names.region,
                list(&FIPS_REGIONS)
            ),
        });
    }
    if variant.dual_stack && !has_dual_stack(region) {
        let partitions: Vec<&str> = DUAL_STACK_PARTITIONS.iter().map(|p| p.as_str()).collect();
        errors.push(VariantError {
            setting: Setting::DualStack,
            message: format!(
                "STS has no dual-stack endpoint in {} {} (partition {partition}); accepted: a \
                 region of the partitions {}",
                names.region,
                quoted(region),
                list(&partitions)
            ),
        });
    }
    if errors.is_empty() && variant.fips && variant.dual_stack && !has_fips_dual_stack(region) {
        let both: Vec<&str> = FIPS_REGIONS
            .into_iter()
            .filter(|r| has_fips_dual_stack(r))
            .collect();
        errors.push(VariantError {
            setting: Setting::Fips,
            message: format!(
                "together with {}: AWS lists no FIPS dual-stack STS endpoint in {} {} (in GovCloud \
                 the regular endpoint is the FIPS one); accepted: one of the two, or {} one of {}",
                names.dual_stack,
                names.region,
                quoted(region),
                names.region,
                list(&both)
            ),
        });
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(fips: bool, dual_stack: bool) -> Variant {
        Variant { fips, dual_stack }
    }

    fn check(variant: Variant, region: &str) -> Vec<VariantError> {
        check_variant(variant, Some(region), None, &FLAG_NAMES)
    }

    #[test]
    fn fips_regions_are_the_ones_aws_publishes() {
        for region in [
            "us-east-1",
            "us-east-2",
            "us-west-1",
            "us-west-2",
            "us-gov-east-1",
            "us-gov-west-1",
        ] {
            assert_eq!(check(v(true, false), region), vec![], "{region}");
        }
        for (region, partition) in [
            ("eu-west-1", "aws"),
            ("ca-central-1", "aws"),
            ("ap-southeast-2", "aws"),
            ("cn-north-1", "aws-cn"),
            ("cn-northwest-1", "aws-cn"),
            ("us-iso-east-1", "aws-iso"),
            ("us-isob-east-1", "aws-iso-b"),
            ("eusc-de-east-1", "aws-eusc"),
        ] {
            let e = check(v(true, false), region);
            assert_eq!(e.len(), 1, "{region}: {e:?}");
            assert_eq!(e[0].setting, Setting::Fips);
            assert_eq!(
                e[0].message,
                format!(
                    "STS has no FIPS endpoint in --region \"{region}\" (partition {partition}); \
                     accepted: --region one of us-east-1, us-east-2, us-west-1, us-west-2, \
                     us-gov-east-1, us-gov-west-1"
                )
            );
        }
    }

    #[test]
    fn dual_stack_everywhere_but_the_iso_partitions() {
        for region in [
            "eu-west-1",
            "us-east-1",
            "cn-north-1",
            "us-gov-west-1",
            "eusc-de-east-1",
        ] {
            assert_eq!(check(v(false, true), region), vec![], "{region}");
        }
        for region in [
            "us-iso-east-1",
            "us-isob-east-1",
            "eu-isoe-west-1",
            "us-isof-south-1",
        ] {
            let e = check(v(false, true), region);
            assert_eq!(e.len(), 1, "{region}: {e:?}");
            assert_eq!(e[0].setting, Setting::DualStack);
            assert!(
                e[0].message.starts_with(&format!(
                    "STS has no dual-stack endpoint in --region \"{region}\" (partition aws-iso"
                )) && e[0].message.ends_with(
                    "accepted: a region of the partitions aws, aws-cn, aws-us-gov, aws-eusc"
                ),
                "{}",
                e[0].message
            );
        }
    }

    #[test]
    fn fips_dual_stack_only_in_the_commercial_fips_regions() {
        for region in ["us-east-1", "us-east-2", "us-west-1", "us-west-2"] {
            assert_eq!(check(v(true, true), region), vec![], "{region}");
        }
        let e = check(v(true, true), "us-gov-west-1");
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].message.starts_with(
                "together with --use-dualstack-endpoint: AWS lists no FIPS dual-stack STS endpoint \
                 in --region \"us-gov-west-1\""
            ) && e[0]
                .message
                .ends_with("--region one of us-east-1, us-east-2, us-west-1, us-west-2"),
            "{}",
            e[0].message
        );
        // Where neither exists, each setting is named once.
        let e = check(v(true, true), "us-iso-east-1");
        let settings: Vec<Setting> = e.iter().map(|e| e.setting).collect();
        assert_eq!(settings, [Setting::Fips, Setting::DualStack], "{e:?}");
    }

    #[test]
    fn a_custom_endpoint_excludes_both() {
        let e = check_variant(
            v(true, true),
            Some("us-east-1"),
            Some("https://vpce-1.sts.us-east-1.vpce.amazonaws.com"),
            &FLAG_NAMES,
        );
        assert_eq!(e.len(), 2, "{e:?}");
        assert_eq!(
            e[0].message,
            "cannot be combined with --sts-endpoint \"https://vpce-1.sts.us-east-1.vpce.amazonaws.com\": \
             a custom endpoint replaces the one --use-fips-endpoint selects; accepted: one of the two \
             (for a FIPS or dual-stack VPC endpoint, its URL in --sts-endpoint alone)"
        );
        assert_eq!(e[1].setting, Setting::DualStack);
        assert!(e[1].message.contains("--use-dualstack-endpoint selects"));
        // Without a variant, a custom endpoint is no business of this check.
        assert_eq!(
            check_variant(v(false, false), Some("eu-west-1"), Some("x"), &FLAG_NAMES),
            vec![]
        );
    }

    #[test]
    fn no_region_and_malformed_regions_are_left_to_others() {
        assert_eq!(
            check_variant(v(true, true), None, None, &FLAG_NAMES),
            vec![]
        );
        assert_eq!(check(v(true, true), "---"), vec![]);
        assert_eq!(v(true, true).to_string(), "FIPS dual-stack");
        assert_eq!(v(false, false).describe(), "regional");
    }
}
