#!/usr/bin/env bash
# Deploy the gateway-agent JITR Lambda, its IAM role and the topic rule with the aws CLI.
# Idempotent: re-running updates the code, the role policy and the rule in place.
#
# Usage: cloud/jitr-lambda/deploy.sh [--region REGION] [--function-name NAME]
#            [--role-name NAME] [--policy-name NAME] [--gateway-policy-name NAME]
#            [--rule-name NAME] [--dry-run]
#   --policy-name          the IoT policy the Lambda creates/reuses for sensor (device)
#                          certificates (default gateway-agent-device; the Lambda's POLICY_NAME)
#   --gateway-policy-name  the IoT policy for gateway certificates, subject OU=gateway
#                          (default gateway-agent-gateway; the Lambda's GATEWAY_POLICY_NAME)
#   --dry-run              render the documents into a temp dir and print the commands; call nothing
# Environment: AWS_CLI (default: aws), the usual AWS_PROFILE / AWS_REGION / credentials.
# Needs: aws CLI v2, python3 (to build the zip), sed.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
AWS_CLI=${AWS_CLI:-aws}
region=${AWS_REGION:-${AWS_DEFAULT_REGION:-}}
function_name=gateway-agent-jitr
role_name=gateway-agent-jitr-lambda
policy_name=gateway-agent-device
gateway_policy_name=gateway-agent-gateway
rule_name=gateway_agent_jitr
dry_run=0

while [ $# -gt 0 ]; do
  case "$1" in
    --region) region=$2; shift 2 ;;
    --function-name) function_name=$2; shift 2 ;;
    --role-name) role_name=$2; shift 2 ;;
    --policy-name) policy_name=$2; shift 2 ;;
    --gateway-policy-name) gateway_policy_name=$2; shift 2 ;;
    --rule-name) rule_name=$2; shift 2 ;;
    --dry-run) dry_run=1; shift ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "deploy.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
[[ $rule_name =~ ^[A-Za-z0-9_]+$ ]] || { echo "deploy.sh: rule name may contain only letters, digits and _" >&2; exit 2; }
for name in "$policy_name" "$gateway_policy_name"; do
  [[ $name =~ ^[A-Za-z0-9_+=,.@-]{1,128}$ ]] || { echo "deploy.sh: invalid IoT policy name: $name" >&2; exit 2; }
done
[ "$policy_name" != "$gateway_policy_name" ] || { echo "deploy.sh: --policy-name and --gateway-policy-name must differ" >&2; exit 2; }

if [ "$dry_run" = 1 ]; then
  account=${ACCOUNT_ID:-123456789012}
  region=${region:-us-east-1}
  exec 3>&1   # commands are printed on fd 3 so the redirections below do not hide them
  run() { { printf '+'; printf ' %q' "$@"; printf '\n'; } >&3; }
else
  [ -n "$region" ] || region=$($AWS_CLI configure get region || true)
  [ -n "$region" ] || { echo "deploy.sh: no region: pass --region or set AWS_REGION" >&2; exit 2; }
  account=$($AWS_CLI sts get-caller-identity --query Account --output text)
  run() { "$@"; }
fi

work=$(mktemp -d)
[ "$dry_run" = 1 ] || trap 'rm -rf "$work"' EXIT
function_arn="arn:aws:lambda:${region}:${account}:function:${function_name}"
render() {
  sed -e "s|{{region}}|${region}|g" -e "s|{{accountId}}|${account}|g" \
      -e "s|{{functionName}}|${function_name}|g" -e "s|{{policyName}}|${policy_name}|g" \
      -e "s|{{gatewayPolicyName}}|${gateway_policy_name}|g" \
      -e "s|{{functionArn}}|${function_arn}|g" "$1" > "$2"
}
render "$here/lambda-role-policy.template.json" "$work/role-policy.json"
render "$here/topic-rule.template.json" "$work/topic-rule.json"
(cd "$here" && python3 -m zipfile -c "$work/function.zip" index.mjs device-policy.json gateway-policy.json)

# 1. IAM role for the function
if [ "$dry_run" = 1 ] || ! $AWS_CLI iam get-role --role-name "$role_name" >/dev/null 2>&1; then
  run $AWS_CLI iam create-role --role-name "$role_name" \
    --assume-role-policy-document "file://$here/lambda-trust-policy.json" >/dev/null
fi
run $AWS_CLI iam put-role-policy --role-name "$role_name" --policy-name gateway-agent-jitr \
  --policy-document "file://$work/role-policy.json"
role_arn="arn:aws:iam::${account}:role/${role_name}"

# 2. The function (Node.js 20 ships @aws-sdk/client-iot, so the zip holds only our files)
environment="Variables={POLICY_NAME=${policy_name},GATEWAY_POLICY_NAME=${gateway_policy_name}}"
if [ "$dry_run" = 0 ] && $AWS_CLI lambda get-function --function-name "$function_name" >/dev/null 2>&1; then
  run $AWS_CLI lambda update-function-code --function-name "$function_name" \
    --zip-file "fileb://$work/function.zip" >/dev/null
  $AWS_CLI lambda wait function-updated --function-name "$function_name"
  run $AWS_CLI lambda update-function-configuration --function-name "$function_name" \
    --environment "$environment" >/dev/null
else
  # a new role takes a few seconds to become assumable by Lambda: retry
  for attempt in 1 2 3 4 5 6; do
    if run $AWS_CLI lambda create-function --function-name "$function_name" \
        --runtime nodejs20.x --handler index.handler --role "$role_arn" --timeout 30 \
        --zip-file "fileb://$work/function.zip" \
        --environment "$environment" >/dev/null; then
      break
    fi
    [ "$attempt" = 6 ] && exit 1
    sleep 10
  done
fi

# 3. Allow AWS IoT (this rule only) to invoke it
run $AWS_CLI lambda add-permission --function-name "$function_name" --statement-id iot-jitr-rule \
  --action lambda:InvokeFunction --principal iot.amazonaws.com \
  --source-arn "arn:aws:iot:${region}:${account}:rule/${rule_name}" --source-account "$account" \
  >/dev/null 2>&1 || true   # already present on re-runs

# 4. The topic rule
if [ "$dry_run" = 0 ] && $AWS_CLI iot get-topic-rule --rule-name "$rule_name" >/dev/null 2>&1; then
  run $AWS_CLI iot replace-topic-rule --rule-name "$rule_name" --topic-rule-payload "file://$work/topic-rule.json"
else
  run $AWS_CLI iot create-topic-rule --rule-name "$rule_name" --topic-rule-payload "file://$work/topic-rule.json"
fi

if [ "$dry_run" = 1 ]; then
  echo "rendered documents in $work"
else
  echo "deployed: function $function_arn, rule $rule_name, device policy $policy_name, gateway policy $gateway_policy_name (each created on its first JITR)"
fi
