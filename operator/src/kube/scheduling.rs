//! Where the platform lets the operator's pods run: node selector, tolerations, affinity and
//! topology spread, as the chart's values give them for recorders, the front door and export
//! Jobs (recorders must land on nodes the SBCs reach).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, LocalObjectReference, PodAffinityTerm, PodAntiAffinity, PodSpec, Toleration,
    TopologySpreadConstraint,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde::{Deserialize, Serialize};

/// The scheduling constraints of one kind of pod, in the Kubernetes API's own shapes.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct Scheduling {
    pub node_selector: BTreeMap<String, String>,
    pub tolerations: Vec<Toleration>,
    pub affinity: Option<Affinity>,
    /// A constraint without a `labelSelector` spreads the workload's own pods.
    pub topology_spread_constraints: Vec<TopologySpreadConstraint>,
}

impl Scheduling {
    /// Writes these constraints into `pod`, whose own pods `selector` matches. An anti-affinity
    /// term the operator needs (`required`, host networking's one recorder per node) is added
    /// to the platform's affinity, never replaced by it.
    pub fn apply(
        &self,
        pod: &mut PodSpec,
        selector: &BTreeMap<String, String>,
        required: Option<PodAffinityTerm>,
    ) {
        if !self.node_selector.is_empty() {
            pod.node_selector = Some(self.node_selector.clone());
        }
        if !self.tolerations.is_empty() {
            pod.tolerations = Some(self.tolerations.clone());
        }
        // The chart's `affinity: {}` is no affinity.
        let mut affinity = self.affinity.clone().filter(|a| *a != Affinity::default());
        if let Some(term) = required {
            let anti = affinity
                .get_or_insert_with(Affinity::default)
                .pod_anti_affinity
                .get_or_insert_with(PodAntiAffinity::default);
            anti.required_during_scheduling_ignored_during_execution
                .get_or_insert_with(Vec::new)
                .push(term);
        }
        pod.affinity = affinity;
        if !self.topology_spread_constraints.is_empty() {
            let own = LabelSelector {
                match_labels: Some(selector.clone()),
                ..Default::default()
            };
            pod.topology_spread_constraints = Some(
                self.topology_spread_constraints
                    .iter()
                    .cloned()
                    .map(|mut c| {
                        c.label_selector.get_or_insert_with(|| own.clone());
                        c
                    })
                    .collect(),
            );
        }
    }
}

/// The image pull Secrets every pod the operator makes names (they must exist in its namespace).
pub fn pull_secrets(names: &[String]) -> Option<Vec<LocalObjectReference>> {
    (!names.is_empty()).then(|| {
        names
            .iter()
            .map(|name| LocalObjectReference { name: name.clone() })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn selector() -> BTreeMap<String, String> {
        BTreeMap::from([("app".to_string(), "rec".to_string())])
    }

    #[test]
    fn nothing_set_leaves_the_pod_alone() {
        let mut pod = PodSpec::default();
        let chart_defaults: Scheduling = serde_saphyr::from_str(
            r#"{"nodeSelector":{},"tolerations":[],"affinity":{},"topologySpreadConstraints":[]}"#,
        )
        .unwrap();
        chart_defaults.apply(&mut pod, &selector(), None);
        assert_eq!(pod, PodSpec::default());
    }

    #[test]
    fn the_operators_anti_affinity_joins_the_platforms_affinity() {
        let s: Scheduling = serde_saphyr::from_str(
            "nodeSelector: {sbc-reachable: \"true\"}\n\
             tolerations: [{key: sip, operator: Exists, effect: NoSchedule}]\n\
             affinity:\n  podAntiAffinity:\n    requiredDuringSchedulingIgnoredDuringExecution:\n\
             \x20     - {topologyKey: zone, labelSelector: {matchLabels: {x: y}}}\n\
             topologySpreadConstraints:\n\
             \x20 - {maxSkew: 1, topologyKey: topology.kubernetes.io/zone, whenUnsatisfiable: ScheduleAnyway}\n\
             \x20 - {maxSkew: 2, topologyKey: h, whenUnsatisfiable: DoNotSchedule, labelSelector: {matchLabels: {a: b}}}\n",
        )
        .unwrap();
        let mut pod = PodSpec::default();
        let term = PodAffinityTerm {
            topology_key: "kubernetes.io/hostname".into(),
            ..Default::default()
        };
        s.apply(&mut pod, &selector(), Some(term));
        assert_eq!(pod.node_selector.unwrap()["sbc-reachable"], "true");
        assert_eq!(pod.tolerations.unwrap()[0].key.as_deref(), Some("sip"));
        let terms = pod
            .affinity
            .unwrap()
            .pod_anti_affinity
            .unwrap()
            .required_during_scheduling_ignored_during_execution
            .unwrap();
        let keys: Vec<&str> = terms.iter().map(|t| t.topology_key.as_str()).collect();
        assert_eq!(keys, ["zone", "kubernetes.io/hostname"]);
        let spread = pod.topology_spread_constraints.unwrap();
        assert_eq!(
            spread[0].label_selector.as_ref().unwrap().match_labels,
            Some(selector()),
            "no selector: the workload's own pods"
        );
        assert_eq!(
            spread[1].label_selector.as_ref().unwrap().match_labels,
            Some(BTreeMap::from([("a".to_string(), "b".to_string())]))
        );
    }

    #[test]
    fn an_unknown_field_is_refused() {
        assert!(serde_saphyr::from_str::<Scheduling>("nodeSelectr: {a: b}\n").is_err());
    }
}
