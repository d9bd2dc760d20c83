//! The builder's rate-limit setting: one value, like retry and cache, so that no setter
//! silently drops what an earlier one set.
//!
//! [`ClientBuilder::rpm`](crate::ClientBuilder::rpm) and
//! [`ClientBuilder::tpm`](crate::ClientBuilder::tpm) are two fields of one per-minute limit and
//! combine. [`ClientBuilder::rate_limits`](crate::ClientBuilder::rate_limits) sets the whole
//! limit, and a ready-made limiter (`rate_limiter`, `shared_rate_limiter`) carries its own: a
//! builder given more than one of these three forms fails in `build()`, naming both, instead
//! of picking one.

use volley_core::{Error, ErrorKind};
use volley_middleware::rate_limit::{Limits, LocalLimiter, RateLimitLayer};

/// The limiter in the rate-limit slot.
#[cfg(not(feature = "redis"))]
pub(crate) type SlotLimiter = LocalLimiter;
/// The limiter in the rate-limit slot: local or shared.
#[cfg(feature = "redis")]
pub(crate) type SlotLimiter = crate::any_limiter::AnyLimiter;

/// Whether a limiter has learned a token limit, or may learn one from its first answer, so
/// requests need a token estimate.
#[cfg(not(feature = "redis"))]
pub(crate) fn learned_tokens(limiter: &SlotLimiter) -> bool {
    limiter.counts_tokens()
}

/// Whether a limiter has learned a token limit, or may learn one from its first answer, so
/// requests need a token estimate.
#[cfg(feature = "redis")]
pub(crate) fn learned_tokens(limiter: &SlotLimiter) -> bool {
    match limiter {
        SlotLimiter::Local(limiter) => limiter.counts_tokens(),
        SlotLimiter::Redis(limiter) => limiter.counts_tokens(),
    }
}

/// The limits a limiter learned so far, per minute: `(requests, tokens)`.
#[cfg(not(feature = "redis"))]
pub(crate) fn learned_limits(limiter: &SlotLimiter) -> (Option<u64>, Option<u64>) {
    limiter.learned()
}

/// The limits a limiter learned so far, per minute: `(requests, tokens)`.
#[cfg(feature = "redis")]
pub(crate) fn learned_limits(limiter: &SlotLimiter) -> (Option<u64>, Option<u64>) {
    match limiter {
        SlotLimiter::Local(limiter) => limiter.learned(),
        SlotLimiter::Redis(limiter) => limiter.learned(),
    }
}

/// How long a 429's pause still holds a limiter's sends; the in-process limiter's only.
#[cfg(not(feature = "redis"))]
pub(crate) fn paused_for(limiter: &SlotLimiter) -> Option<std::time::Duration> {
    limiter.paused_for()
}

/// How long a 429's pause still holds a limiter's sends; the in-process limiter's only (a
/// shared limiter's pause is kept in Redis).
#[cfg(feature = "redis")]
pub(crate) fn paused_for(limiter: &SlotLimiter) -> Option<std::time::Duration> {
    match limiter {
        SlotLimiter::Local(limiter) => limiter.paused_for(),
        SlotLimiter::Redis(_) => None,
    }
}

/// What the builder was told about rate limits.
#[derive(Clone, Default)]
pub(crate) enum RateLimitSetting {
    /// No limit given (the default): both are learned from the provider's headers, with a
    /// slow start until the first answer and a shared pause on 429s ([`Limits::auto`]).
    #[default]
    None,
    /// `rpm(..)` and/or `tpm(..)`; `Some(0)` turns that limit off and stops learning it, and
    /// one left out is learned. `input_tpm(..)` and `output_tpm(..)` add Anthropic's input-
    /// and output-token limits (never learned; 0 for none).
    PerMinute {
        rpm: Option<u32>,
        tpm: Option<u64>,
        input_tpm: Option<u64>,
        output_tpm: Option<u64>,
    },
    /// `rate_limits(..)`.
    Limits(Limits),
    /// `rate_limiter(..)` or `shared_rate_limiter(..)`, and whether it limits tokens (then
    /// requests need a token estimate).
    Limiter {
        limiter: SlotLimiter,
        counts_tokens: bool,
        setter: &'static str,
    },
    /// Two forms that exclude each other were given; `build()` reports it.
    Conflict {
        first: &'static str,
        second: &'static str,
    },
}

impl RateLimitSetting {
    /// An endpoint's own setting over the client's, `inherited`: per-minute limits the
    /// endpoint leaves out are the client's (`Endpoint::rpm(500)` on a client with
    /// `tpm(N)` keeps the `N`); any other form of the endpoint's is its whole limit.
    pub(crate) fn over(self, inherited: &RateLimitSetting) -> RateLimitSetting {
        match (self, inherited) {
            (
                RateLimitSetting::PerMinute {
                    rpm,
                    tpm,
                    input_tpm,
                    output_tpm,
                },
                RateLimitSetting::PerMinute {
                    rpm: client_rpm,
                    tpm: client_tpm,
                    input_tpm: client_input,
                    output_tpm: client_output,
                },
            ) => RateLimitSetting::PerMinute {
                rpm: rpm.or(*client_rpm),
                tpm: tpm.or(*client_tpm),
                input_tpm: input_tpm.or(*client_input),
                output_tpm: output_tpm.or(*client_output),
            },
            (own, _) => own,
        }
    }

    /// `rpm(..)`: sets the requests of a per-minute limit, keeping its tokens.
    pub(crate) fn rpm(self, rpm: u32) -> RateLimitSetting {
        match self {
            RateLimitSetting::None => RateLimitSetting::PerMinute {
                rpm: Some(rpm),
                tpm: None,
                input_tpm: None,
                output_tpm: None,
            },
            RateLimitSetting::PerMinute {
                tpm,
                input_tpm,
                output_tpm,
                ..
            } => RateLimitSetting::PerMinute {
                rpm: Some(rpm),
                tpm,
                input_tpm,
                output_tpm,
            },
            other => other.conflict("rpm(..)"),
        }
    }

    /// `tpm(..)`: sets the tokens of a per-minute limit, keeping its requests.
    pub(crate) fn tpm(self, tpm: u64) -> RateLimitSetting {
        match self {
            RateLimitSetting::None => RateLimitSetting::PerMinute {
                rpm: None,
                tpm: Some(tpm),
                input_tpm: None,
                output_tpm: None,
            },
            RateLimitSetting::PerMinute {
                rpm,
                input_tpm,
                output_tpm,
                ..
            } => RateLimitSetting::PerMinute {
                rpm,
                tpm: Some(tpm),
                input_tpm,
                output_tpm,
            },
            other => other.conflict("tpm(..)"),
        }
    }

    /// `input_tpm(..)` / `output_tpm(..)`: sets the input- (`output: false`) or output-token
    /// limit of a per-minute limit, keeping the rest.
    pub(crate) fn split_tpm(self, output: bool, per_minute: u64) -> RateLimitSetting {
        let (rpm, tpm, mut input_tpm, mut output_tpm) = match self {
            RateLimitSetting::None => (None, None, None, None),
            RateLimitSetting::PerMinute {
                rpm,
                tpm,
                input_tpm,
                output_tpm,
            } => (rpm, tpm, input_tpm, output_tpm),
            other => {
                return other.conflict(if output {
                    "output_tpm(..)"
                } else {
                    "input_tpm(..)"
                });
            }
        };
        *(if output {
            &mut output_tpm
        } else {
            &mut input_tpm
        }) = Some(per_minute);
        RateLimitSetting::PerMinute {
            rpm,
            tpm,
            input_tpm,
            output_tpm,
        }
    }

    /// `rate_limits(..)`: the whole limit; a second call replaces the first.
    pub(crate) fn limits(self, limits: Limits) -> RateLimitSetting {
        match self {
            RateLimitSetting::None | RateLimitSetting::Limits(_) => {
                RateLimitSetting::Limits(limits)
            }
            other => other.conflict("rate_limits(..)"),
        }
    }

    /// A ready-made limiter; a second one replaces the first.
    pub(crate) fn limiter(
        self,
        limiter: SlotLimiter,
        counts_tokens: bool,
        setter: &'static str,
    ) -> RateLimitSetting {
        match self {
            RateLimitSetting::None | RateLimitSetting::Limiter { .. } => {
                RateLimitSetting::Limiter {
                    limiter,
                    counts_tokens,
                    setter,
                }
            }
            other => other.conflict(setter),
        }
    }

    /// The rate-limit layer, if any, and whether requests need a token estimate.
    ///
    /// # Errors
    /// `ErrorKind::Config` for two forms that exclude each other, or invalid limits.
    pub(crate) fn into_layer(self) -> Result<(Option<RateLimitLayer<SlotLimiter>>, bool), Error> {
        let limits = match self {
            RateLimitSetting::None => Some(Limits::auto()),
            RateLimitSetting::Conflict { first, second } => {
                return Err(Error::new(
                    ErrorKind::Config,
                    format!(
                        "rate limits given twice, by {first} and by {second}: rpm/tpm, \
                         rate_limits and a ready-made limiter each set the whole rate limit; \
                         give one (a limiter carries its own limits)"
                    ),
                ));
            }
            RateLimitSetting::Limiter {
                limiter,
                counts_tokens,
                ..
            } => return Ok((Some(RateLimitLayer::with_limiter(limiter)), counts_tokens)),
            RateLimitSetting::PerMinute {
                rpm,
                tpm,
                input_tpm,
                output_tpm,
            } => Limits::from_settings(rpm, tpm, input_tpm, output_tpm),
            RateLimitSetting::Limits(limits) => Some(limits),
        };
        // rpm(0) and tpm(0), or rate_limits(..) of nothing: nothing to limit or learn.
        let Some(limits) = limits.filter(Limits::is_active) else {
            return Ok((None, false));
        };
        let counts_tokens = limits.tokens_per_minute().is_some();
        let limiter = SlotLimiter::from(LocalLimiter::new(limits)?);
        Ok((Some(RateLimitLayer::with_limiter(limiter)), counts_tokens))
    }

    /// The name of the setter that made this setting, for a conflict message.
    fn setter(&self) -> &'static str {
        match self {
            RateLimitSetting::None => "nothing",
            RateLimitSetting::PerMinute { rpm: Some(_), .. } => "rpm(..)",
            RateLimitSetting::PerMinute { .. } => "tpm(..)",
            RateLimitSetting::Limits(_) => "rate_limits(..)",
            RateLimitSetting::Limiter { setter, .. } => setter,
            RateLimitSetting::Conflict { first, .. } => first,
        }
    }

    fn conflict(self, second: &'static str) -> RateLimitSetting {
        match self {
            // The first conflict is the one reported.
            RateLimitSetting::Conflict { .. } => self,
            other => RateLimitSetting::Conflict {
                first: other.setter(),
                second,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(limits: Limits) -> SlotLimiter {
        SlotLimiter::from(LocalLimiter::new(limits).unwrap())
    }

    fn error(setting: RateLimitSetting) -> String {
        match setting.into_layer() {
            Ok(_) => panic!("expected a conflict"),
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::Config);
                e.to_string()
            }
        }
    }

    #[test]
    fn rpm_and_tpm_combine_in_either_order() {
        for setting in [
            RateLimitSetting::None.rpm(600).tpm(90_000),
            RateLimitSetting::None.tpm(90_000).rpm(600),
        ] {
            let RateLimitSetting::PerMinute { rpm, tpm, .. } = &setting else {
                panic!("expected a per-minute limit");
            };
            assert_eq!((*rpm, *tpm), (Some(600), Some(90_000)));
            let (layer, counts_tokens) = setting.into_layer().unwrap();
            assert!(layer.is_some());
            assert!(counts_tokens, "a token limit needs token estimates");
        }
    }

    /// An endpoint's `rpm(..)` over a client's `tpm(..)` keeps the client's tokens (it had
    /// none, so they were learned, not enforced), and the endpoint's own values win.
    #[test]
    fn an_endpoint_s_per_minute_limits_fill_in_from_the_client_s() {
        let client = RateLimitSetting::None.tpm(90_000).rpm(100);
        let merged = RateLimitSetting::None.rpm(500).over(&client);
        let RateLimitSetting::PerMinute { rpm, tpm, .. } = &merged else {
            panic!("expected a per-minute limit");
        };
        assert_eq!((*rpm, *tpm), (Some(500), Some(90_000)));
        let (_, counts_tokens) = merged.into_layer().unwrap();
        assert!(counts_tokens, "the client's token limit is enforced");
        // Another form of the endpoint's is its whole limit; none of the client's is none.
        let own = RateLimitSetting::None.limits(Limits::per_minute().requests(5));
        assert!(matches!(own.over(&client), RateLimitSetting::Limits(_)));
        let alone = RateLimitSetting::None.rpm(7).over(&RateLimitSetting::None);
        assert!(matches!(
            alone,
            RateLimitSetting::PerMinute {
                rpm: Some(7),
                tpm: None,
                ..
            }
        ));
    }

    #[test]
    fn requests_only_need_no_token_estimate() {
        let (layer, counts_tokens) = RateLimitSetting::None.rpm(60).into_layer().unwrap();
        assert!(layer.is_some());
        assert!(!counts_tokens);
        let (layer, counts_tokens) = RateLimitSetting::None.rpm(0).tpm(0).into_layer().unwrap();
        assert!(layer.is_none(), "0 turns each limit off");
        assert!(!counts_tokens);
        let (layer, counts_tokens) = RateLimitSetting::None.into_layer().unwrap();
        assert!(layer.is_some(), "no limit given: learned");
        assert!(!counts_tokens, "until a token limit is learned");
    }

    #[test]
    fn a_later_setter_never_silently_drops_an_earlier_one() {
        let limits = || Limits::per_minute().requests(100);
        // Every pair of different forms, in both orders, is an error naming both setters.
        let cases: Vec<(RateLimitSetting, [&str; 2])> = vec![
            (
                RateLimitSetting::None
                    .limiter(local(limits()), false, "rate_limiter(..)")
                    .rpm(100),
                ["rate_limiter(..)", "rpm(..)"],
            ),
            (
                RateLimitSetting::None
                    .rpm(100)
                    .limiter(local(limits()), false, "rate_limiter(..)"),
                ["rpm(..)", "rate_limiter(..)"],
            ),
            (
                RateLimitSetting::None.tpm(1_000).limits(limits()),
                ["tpm(..)", "rate_limits(..)"],
            ),
            (
                RateLimitSetting::None.limits(limits()).tpm(1_000),
                ["rate_limits(..)", "tpm(..)"],
            ),
            (
                RateLimitSetting::None.limits(limits()).limiter(
                    local(limits()),
                    true,
                    "shared_rate_limiter(..)",
                ),
                ["rate_limits(..)", "shared_rate_limiter(..)"],
            ),
        ];
        for (setting, [first, second]) in cases {
            let message = error(setting);
            assert!(
                message.contains(&format!("by {first} and by {second}")),
                "{message}"
            );
        }
    }

    #[test]
    fn the_same_form_set_again_replaces_itself() {
        let setting = RateLimitSetting::None
            .limits(Limits::per_minute().requests(1))
            .limits(Limits::per_minute().tokens(5));
        let RateLimitSetting::Limits(limits) = &setting else {
            panic!("expected limits");
        };
        assert_eq!(limits.requests_per_minute(), None);
        assert!(setting.into_layer().unwrap().1);
        let setting = RateLimitSetting::None.rpm(1).rpm(2);
        assert!(matches!(
            setting,
            RateLimitSetting::PerMinute {
                rpm: Some(2),
                tpm: None,
                ..
            }
        ));
    }

    #[test]
    fn input_and_output_limits_combine_with_rpm_and_tpm() {
        let setting = RateLimitSetting::None
            .split_tpm(false, 30_000)
            .rpm(50)
            .split_tpm(true, 8_000)
            .tpm(0);
        assert!(matches!(
            setting,
            RateLimitSetting::PerMinute {
                rpm: Some(50),
                tpm: Some(0),
                input_tpm: Some(30_000),
                output_tpm: Some(8_000),
            }
        ));
        let (layer, _) = setting.into_layer().unwrap();
        let layer = layer.expect("the split limits are enforced");
        assert!(volley_middleware::rate_limit::RateLimiter::splits_tokens(
            layer.limiter()
        ));
        // Only split limits, rpm and tpm off: still a limiter.
        let only = RateLimitSetting::None.rpm(0).tpm(0).split_tpm(true, 10);
        assert!(only.into_layer().unwrap().0.is_some());
        let conflict = RateLimitSetting::None
            .limits(Limits::per_minute())
            .split_tpm(false, 1);
        assert!(conflict.into_layer().is_err());
    }
}
