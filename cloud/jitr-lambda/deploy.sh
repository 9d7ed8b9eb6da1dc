#!/usr/bin/env bash
# Deploy the gateway-agent Lambda (JITR, certificate retirement and CA hand-over), its IAM
# role and its three topic rules with the aws CLI. Idempotent: re-running updates the code,
# the role policy, the invoke permissions and the rules in place.
#
# Usage: cloud/jitr-lambda/deploy.sh [--region REGION] [--function-name NAME]
#            [--role-name NAME] [--policy-name NAME] [--gateway-policy-name NAME]
#            [--rule-name NAME] [--retire-rule-name NAME] [--handover-rule-name NAME]
#            [--ca-id ID] [--dry-run | --render-only DIR]
#        cloud/jitr-lambda/deploy.sh --rules-only --function-arn ARN [--ca-id ID]
#            [--endpoint-url URL] [--region REGION] [--rule-name NAME] [--retire-rule-name NAME]
#            [--handover-rule-name NAME]
#   --policy-name          the IoT policy the Lambda creates/reuses for sensor (device)
#                          certificates (default gateway-agent-device; the Lambda's POLICY_NAME)
#   --gateway-policy-name  the IoT policy for gateway certificates, subject OU=gateway
#                          (default gateway-agent-gateway; the Lambda's GATEWAY_POLICY_NAME)
#   --rule-name            the JITR rule (default gateway_agent_jitr)
#   --retire-rule-name     the retire rule (default gateway_agent_retire)
#   --handover-rule-name   the CA hand-over rule (default gateway_agent_handover)
#   --ca-id ID             the JITR rule takes the registration events of that CA only
#                          ('$aws/events/certificates/registered/ID'); default: every CA ('#')
#   --dry-run              render the documents into a temp dir and print the commands; call nothing
#   --render-only DIR      only write role-policy.json, topic-rule.json, retire-rule.json and
#                          handover-rule.json into DIR; call nothing (iot-sim's
#                          --lambda-role-policy takes the first)
#   --rules-only           only create or replace the topic rules, for the function ARN given
#                          with --function-arn (region: --region, else the ARN's); --endpoint-url
#                          is passed to the aws CLI, so the same command sets up iot-sim
# Environment: AWS_CLI (default: aws), the usual AWS_PROFILE / AWS_REGION / credentials.
# With --dry-run or --render-only: ACCOUNT_ID (default 123456789012) and PARTITION (default:
# from the region, aws-cn for cn-*, aws-us-gov for us-gov-*, else aws); otherwise both come
# from `aws sts get-caller-identity`.
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
retire_rule_name=gateway_agent_retire
handover_rule_name=gateway_agent_handover
dry_run=0
render_dir=
rules_only=0
region_arg=
function_arn_arg=
ca_id=
endpoint_url=

while [ $# -gt 0 ]; do
  case "$1" in
    --region) region=$2 region_arg=$2; shift 2 ;;
    --function-name) function_name=$2; shift 2 ;;
    --role-name) role_name=$2; shift 2 ;;
    --policy-name) policy_name=$2; shift 2 ;;
    --gateway-policy-name) gateway_policy_name=$2; shift 2 ;;
    --rule-name) rule_name=$2; shift 2 ;;
    --retire-rule-name) retire_rule_name=$2; shift 2 ;;
    --handover-rule-name) handover_rule_name=$2; shift 2 ;;
    --ca-id) ca_id=$2; shift 2 ;;
    --dry-run) dry_run=1; shift ;;
    --render-only) render_dir=$2; shift 2 ;;
    --rules-only) rules_only=1; shift ;;
    --function-arn) function_arn_arg=$2; shift 2 ;;
    --endpoint-url) endpoint_url=$2; shift 2 ;;
    -h|--help) sed -n '2,33p' "$0"; exit 0 ;;
    *) echo "deploy.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
for name in "$rule_name" "$retire_rule_name" "$handover_rule_name"; do
  [[ $name =~ ^[A-Za-z0-9_]{1,128}$ ]] || { echo "deploy.sh: rule name may contain only letters, digits and _: $name" >&2; exit 2; }
done
if [ "$rule_name" = "$retire_rule_name" ] || [ "$rule_name" = "$handover_rule_name" ] || [ "$retire_rule_name" = "$handover_rule_name" ]; then
  echo "deploy.sh: --rule-name, --retire-rule-name and --handover-rule-name must differ" >&2; exit 2
fi
[ -z "$ca_id" ] || [[ $ca_id =~ ^[0-9a-f]{64}$ ]] || { echo "deploy.sh: --ca-id must be a CA certificate id (64 lowercase hex characters)" >&2; exit 2; }
if [ "$rules_only" = 1 ]; then
  [ "$dry_run" = 0 ] && [ -z "$render_dir" ] || { echo "deploy.sh: --rules-only goes without --dry-run and --render-only" >&2; exit 2; }
elif [ -n "$function_arn_arg" ] || [ -n "$endpoint_url" ]; then
  echo "deploy.sh: --function-arn and --endpoint-url go with --rules-only" >&2; exit 2
fi
for name in "$policy_name" "$gateway_policy_name"; do
  [[ $name =~ ^[A-Za-z0-9_+=,.@-]{1,128}$ ]] || { echo "deploy.sh: invalid IoT policy name: $name" >&2; exit 2; }
done
[ "$policy_name" != "$gateway_policy_name" ] || { echo "deploy.sh: --policy-name and --gateway-policy-name must differ" >&2; exit 2; }

partition_of_region() {
  case "$1" in
    cn-*) echo aws-cn ;;
    us-gov-*) echo aws-us-gov ;;
    *) echo aws ;;
  esac
}

# The JITR rule: the registration events of every CA, or of --ca-id's only.
render_jitr_rule() {
  if [ -n "$ca_id" ]; then
    sed -e "s|{{functionArn}}|$1|g" -e "s|'\$aws/events/certificates/registered/#'|'\$aws/events/certificates/registered/${ca_id}'|" \
      "$here/topic-rule.template.json" > "$2"
  else
    sed -e "s|{{functionArn}}|$1|g" "$here/topic-rule.template.json" > "$2"
  fi
}
render_retire_rule() { sed -e "s|{{functionArn}}|$1|g" "$here/retire-rule.template.json" > "$2"; }
render_handover_rule() { sed -e "s|{{functionArn}}|$1|g" "$here/handover-rule.template.json" > "$2"; }

# --rules-only: create or replace every topic rule the agent needs, nothing else.
if [ "$rules_only" = 1 ]; then
  [[ $function_arn_arg =~ ^arn:aws(-[a-z]+)*:lambda:([a-z0-9-]+):[0-9]{12}:function:[A-Za-z0-9_-]{1,64}(:[A-Za-z0-9_$-]+)?$ ]] ||
    { echo "deploy.sh: --rules-only needs --function-arn arn:<partition>:lambda:<region>:<account>:function:<name>" >&2; exit 2; }
  region=${region_arg:-$(cut -d: -f4 <<<"$function_arn_arg")}   # the function's region unless --region
  iot() { $AWS_CLI iot "$@" --region "$region" ${endpoint_url:+--endpoint-url "$endpoint_url"}; }
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  render_jitr_rule "$function_arn_arg" "$work/topic-rule.json"
  render_retire_rule "$function_arn_arg" "$work/retire-rule.json"
  render_handover_rule "$function_arn_arg" "$work/handover-rule.json"
  for pair in "$rule_name:topic-rule.json" "$retire_rule_name:retire-rule.json" "$handover_rule_name:handover-rule.json"; do
    name=${pair%%:*} doc=$work/${pair#*:}
    if iot get-topic-rule --rule-name "$name" >/dev/null 2>&1; then
      iot replace-topic-rule --rule-name "$name" --topic-rule-payload "file://$doc"
      echo "replaced rule $name"
    else
      iot create-topic-rule --rule-name "$name" --topic-rule-payload "file://$doc"
      echo "created rule $name"
    fi
  done
  echo "rules $rule_name, $retire_rule_name and $handover_rule_name invoke $function_arn_arg"
  exit 0
fi
if [ "$dry_run" = 1 ] || [ -n "$render_dir" ]; then
  account=${ACCOUNT_ID:-123456789012}
  region=${region:-us-east-1}
  partition=${PARTITION:-$(partition_of_region "$region")}
  exec 3>&1   # commands are printed on fd 3 so the redirections below do not hide them
  run() { { printf '+'; printf ' %q' "$@"; printf '\n'; } >&3; }
else
  [ -n "$region" ] || region=$($AWS_CLI configure get region || true)
  [ -n "$region" ] || { echo "deploy.sh: no region: pass --region or set AWS_REGION" >&2; exit 2; }
  export AWS_REGION=$region AWS_DEFAULT_REGION=$region   # every call below goes to that region
  # account and partition (aws, aws-cn, aws-us-gov) of the credentials in use
  read -r account caller_arn < <($AWS_CLI sts get-caller-identity --query '[Account, Arn]' --output text)
  partition=$(cut -d: -f2 <<<"$caller_arn")
  run() { "$@"; }
fi
[[ $account =~ ^[0-9]{12}$ ]] || { echo "deploy.sh: cannot determine the AWS account (got '$account')" >&2; exit 1; }
[[ $partition =~ ^aws(-[a-z]+)*$ ]] || { echo "deploy.sh: cannot determine the AWS partition (got '$partition')" >&2; exit 1; }

if [ -n "$render_dir" ]; then
  work=$render_dir
  mkdir -p "$work"
else
  work=$(mktemp -d)
  [ "$dry_run" = 1 ] || trap 'rm -rf "$work"' EXIT
fi
function_arn="arn:${partition}:lambda:${region}:${account}:function:${function_name}"
render() {
  sed -e "s|{{partition}}|${partition}|g" -e "s|{{region}}|${region}|g" -e "s|{{accountId}}|${account}|g" \
      -e "s|{{functionName}}|${function_name}|g" -e "s|{{policyName}}|${policy_name}|g" \
      -e "s|{{gatewayPolicyName}}|${gateway_policy_name}|g" \
      -e "s|{{functionArn}}|${function_arn}|g" "$1" > "$2"
}
render "$here/lambda-role-policy.template.json" "$work/role-policy.json"
render_jitr_rule "$function_arn" "$work/topic-rule.json"
render_retire_rule "$function_arn" "$work/retire-rule.json"
render_handover_rule "$function_arn" "$work/handover-rule.json"
if [ -n "$render_dir" ]; then
  echo "rendered $work/role-policy.json, $work/topic-rule.json, $work/retire-rule.json and $work/handover-rule.json for $function_arn"
  exit 0
fi
(cd "$here" && python3 -m zipfile -c "$work/function.zip" index.mjs device-policy.json gateway-policy.json)

# 1. IAM role for the function
if [ "$dry_run" = 1 ] || ! $AWS_CLI iam get-role --role-name "$role_name" >/dev/null 2>&1; then
  run $AWS_CLI iam create-role --role-name "$role_name" \
    --assume-role-policy-document "file://$here/lambda-trust-policy.json" >/dev/null
fi
run $AWS_CLI iam put-role-policy --role-name "$role_name" --policy-name gateway-agent-jitr \
  --policy-document "file://$work/role-policy.json"
role_arn="arn:${partition}:iam::${account}:role/${role_name}"

# 2. The function (Node.js 20 ships the AWS SDK v3, @aws-sdk/client-iot and
# @aws-sdk/client-iot-data-plane included, so the zip holds only our files). Its replies to
# retire and hand-over requests go to the account's data endpoint (iot:Data-ATS), as the CLI
# reference recommends.
if [ "$dry_run" = 1 ]; then
  run $AWS_CLI iot describe-endpoint --endpoint-type iot:Data-ATS --query endpointAddress --output text
  data_endpoint="<endpointAddress>"
else
  data_endpoint=$($AWS_CLI iot describe-endpoint --endpoint-type iot:Data-ATS --query endpointAddress --output text)
  [[ $data_endpoint =~ ^[A-Za-z0-9.-]+$ ]] || { echo "deploy.sh: unexpected iot:Data-ATS endpoint '$data_endpoint'" >&2; exit 1; }
fi
environment="Variables={POLICY_NAME=${policy_name},GATEWAY_POLICY_NAME=${gateway_policy_name},IOT_DATA_ENDPOINT=https://${data_endpoint}}"
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

# 3. Allow AWS IoT to invoke it, from each of the three rules only: one statement per rule.
# Each statement is replaced, so a re-deploy with another rule name moves the permission to
# the new rule: remove it (only "not found", on the first deploy, is expected), then add it.
# Any other error stops the deploy.
allow_rule() {  # statement id, rule name
  if [ "$dry_run" = 1 ]; then
    run $AWS_CLI lambda remove-permission --function-name "$function_name" --statement-id "$1"
    echo "  (ResourceNotFoundException from remove-permission is ignored; any other error stops the deploy)"
  elif ! err=$($AWS_CLI lambda remove-permission --function-name "$function_name" \
      --statement-id "$1" 2>&1 >/dev/null); then
    case "$err" in
      *"(ResourceNotFoundException)"*) ;;   # nothing to replace yet
      *) echo "deploy.sh: lambda remove-permission failed: $err" >&2; exit 1 ;;
    esac
  fi
  run $AWS_CLI lambda add-permission --function-name "$function_name" --statement-id "$1" \
    --action lambda:InvokeFunction --principal iot.amazonaws.com \
    --source-arn "arn:${partition}:iot:${region}:${account}:rule/$2" --source-account "$account" \
    >/dev/null
}
allow_rule iot-jitr-rule "$rule_name"
allow_rule iot-retire-rule "$retire_rule_name"
allow_rule iot-handover-rule "$handover_rule_name"

# 4. The topic rules
for pair in "$rule_name:topic-rule.json" "$retire_rule_name:retire-rule.json" "$handover_rule_name:handover-rule.json"; do
  name=${pair%%:*} doc=$work/${pair#*:}
  if [ "$dry_run" = 0 ] && $AWS_CLI iot get-topic-rule --rule-name "$name" >/dev/null 2>&1; then
    run $AWS_CLI iot replace-topic-rule --rule-name "$name" --topic-rule-payload "file://$doc"
  else
    run $AWS_CLI iot create-topic-rule --rule-name "$name" --topic-rule-payload "file://$doc"
  fi
done

if [ "$dry_run" = 1 ]; then
  echo "rendered documents in $work"
else
  echo "deployed: function $function_arn, rules $rule_name, $retire_rule_name and $handover_rule_name, device policy $policy_name, gateway policy $gateway_policy_name (each created on its first JITR)"
fi
