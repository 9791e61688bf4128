//! The fleet's NetworkPolicy: with `sip.allow` set, the recorders take SIP only from those ranges
//! (and from the front door's pods, when it is on); RTP and the HTTP port stay open, since media
//! may come from addresses other than the SBC's signalling ones and is pinned per stream by the
//! recorder itself. The recorders check the same list, so a cluster without NetworkPolicy
//! enforcement (or `hostNetwork`, which NetworkPolicy does not cover) is still protected. Pure.

use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{HTTP_PORT, SIP_PORT, SIPS_PORT, front_door, meta, selector};
use crate::settings::Settings;

fn port(protocol: &str, port: i32, end: Option<i32>) -> NetworkPolicyPort {
    NetworkPolicyPort {
        protocol: Some(protocol.into()),
        port: Some(IntOrString::Int(port)),
        end_port: end,
    }
}

/// `None` while `sip.allow` is empty: nothing to restrict.
pub fn network_policy(namespace: &str, settings: &Settings) -> Option<NetworkPolicy> {
    if settings.sip.allow.is_empty() {
        return None;
    }
    let mut from: Vec<NetworkPolicyPeer> = settings
        .sip
        .allow
        .iter()
        .map(|r| NetworkPolicyPeer {
            ip_block: Some(IPBlock {
                cidr: r.0.to_string(),
                except: None,
            }),
            ..Default::default()
        })
        .collect();
    if settings.front_door.enabled {
        from.push(NetworkPolicyPeer {
            pod_selector: Some(LabelSelector {
                match_labels: Some(front_door::selector(namespace)),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    let (min, max) = (
        i32::from(settings.rtp.port_min),
        i32::from(settings.rtp.port_max),
    );
    Some(NetworkPolicy {
        metadata: meta(namespace),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(selector(namespace)),
                ..Default::default()
            }),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(vec![
                NetworkPolicyIngressRule {
                    from: Some(from),
                    ports: Some(
                        [port("UDP", SIP_PORT, None), port("TCP", SIP_PORT, None)]
                            .into_iter()
                            .chain(
                                settings
                                    .sip
                                    .tls
                                    .is_some()
                                    .then(|| port("TCP", SIPS_PORT, None)),
                            )
                            .collect(),
                    ),
                },
                NetworkPolicyIngressRule {
                    from: None,
                    ports: Some(vec![
                        port("UDP", min, Some(max)),
                        port("TCP", HTTP_PORT, None),
                    ]),
                },
            ]),
            egress: None,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sip_only_from_the_allowed_ranges_and_the_front_door() {
        let mut settings = Settings::default();
        assert!(
            network_policy("acme", &settings).is_none(),
            "nothing listed"
        );
        settings.sip.allow = vec![
            "10.20.0.0/16".parse().unwrap(),
            "192.0.2.7".parse().unwrap(),
        ];
        settings.front_door.enabled = true;
        let np = serde_json::to_value(network_policy("acme", &settings).unwrap()).unwrap();
        let rules = np["spec"]["ingress"].as_array().unwrap();
        let sip = &rules[0];
        assert_eq!(sip["from"][0]["ipBlock"]["cidr"], "10.20.0.0/16");
        assert_eq!(sip["from"][1]["ipBlock"]["cidr"], "192.0.2.7/32");
        assert_eq!(
            sip["from"][2]["podSelector"]["matchLabels"]["app.kubernetes.io/name"],
            front_door::FRONT_DOOR
        );
        assert_eq!(sip["ports"][0]["port"], 5060);
        assert!(rules[1].get("from").is_none(), "RTP from anywhere");
        assert_eq!(rules[1]["ports"][0]["endPort"], 32767);
        assert_eq!(
            np["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/name"],
            "opname-recorder"
        );
    }
}
