//! An organisation's own settings, read from annotations on its namespace: the time zone its
//! admins think in (export months, file names and manifest times are counted in it) and the
//! language of what opname writes for them. Both are the namespace's because the namespace is
//! the organisation; neither has a default beyond UTC and English, which is what an
//! unannotated namespace got before.

use std::collections::BTreeMap;

use jiff::tz::TimeZone;

/// IANA time zone of the organisation, e.g. `Europe/Amsterdam`.
pub const TIME_ZONE: &str = "opname.dev/time-zone";
/// BCP 47 language of the organisation, e.g. `nl-NL`.
pub const LOCALE: &str = "opname.dev/locale";

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum OrganisationError {
    #[error("annotation {TIME_ZONE}: {0:?} is not an IANA time zone (e.g. Europe/Amsterdam)")]
    TimeZone(String),
}

/// The organisation's time zone and language.
#[derive(Debug, Clone)]
pub struct Organisation {
    pub time_zone: TimeZone,
    pub locale: Locale,
}

impl Default for Organisation {
    fn default() -> Self {
        Self {
            time_zone: TimeZone::UTC,
            locale: Locale::En,
        }
    }
}

impl Organisation {
    /// From a namespace's annotations; a time zone that names no zone is refused rather than
    /// read as UTC (a Dutch organisation's month would quietly shift by an hour or two).
    pub fn from_annotations(
        annotations: Option<&BTreeMap<String, String>>,
    ) -> Result<Self, OrganisationError> {
        let get = |k: &str| annotations.and_then(|a| a.get(k)).map(|v| v.trim());
        Self::from_names(get(TIME_ZONE), get(LOCALE))
    }

    /// From the names kept in an export's status.
    pub fn from_names(
        time_zone: Option<&str>,
        locale: Option<&str>,
    ) -> Result<Self, OrganisationError> {
        let time_zone = match time_zone.filter(|z| !z.is_empty()) {
            None => TimeZone::UTC,
            Some(z) => TimeZone::get(z).map_err(|_| OrganisationError::TimeZone(z.to_string()))?,
        };
        Ok(Self {
            time_zone,
            locale: locale.map_or(Locale::En, Locale::from_tag),
        })
    }

    /// The organisation of namespace `ns`, read from the API server: the outer error is the
    /// read's, the inner one the annotations'.
    pub async fn of_namespace(
        client: &kube::Client,
        ns: &str,
    ) -> Result<Result<Self, OrganisationError>, kube::Error> {
        let namespace = kube::Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
            .get(ns)
            .await?;
        Ok(Self::from_annotations(
            namespace.metadata.annotations.as_ref(),
        ))
    }

    /// The zone's IANA name, as written into statuses and manifests.
    pub fn zone_name(&self) -> &str {
        self.time_zone.iana_name().unwrap_or("UTC")
    }
}

/// The languages the admin-facing texts exist in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Locale {
    #[default]
    En,
    Nl,
}

impl Locale {
    /// A BCP 47 tag (`nl`, `nl-NL`, `en-GB`); anything else is English.
    pub fn from_tag(tag: &str) -> Self {
        match tag.split(['-', '_']).next().map(str::to_ascii_lowercase) {
            Some(l) if l == "nl" => Locale::Nl,
            _ => Locale::En,
        }
    }

    pub fn tag(self) -> &'static str {
        match self {
            Locale::En => "en",
            Locale::Nl => "nl",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_organisation_is_read_from_its_namespace() {
        let a = BTreeMap::from([
            (TIME_ZONE.to_string(), "Europe/Amsterdam".to_string()),
            (LOCALE.to_string(), "nl-NL".to_string()),
        ]);
        let org = Organisation::from_annotations(Some(&a)).unwrap();
        assert_eq!(org.zone_name(), "Europe/Amsterdam");
        assert_eq!(org.locale, Locale::Nl);
        let plain = Organisation::from_annotations(None).unwrap();
        assert_eq!((plain.zone_name(), plain.locale), ("UTC", Locale::En));
        let bad = BTreeMap::from([(TIME_ZONE.to_string(), "Europe/Amsterdm".to_string())]);
        assert_eq!(
            Organisation::from_annotations(Some(&bad)).unwrap_err(),
            OrganisationError::TimeZone("Europe/Amsterdm".into())
        );
        assert_eq!(Locale::from_tag("en-GB"), Locale::En);
        assert_eq!(
            Locale::from_tag("fr"),
            Locale::En,
            "no French texts: English"
        );
    }
}
