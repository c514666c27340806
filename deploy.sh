#!/usr/bin/env bash
# Deploy the visit counter: a Cloud Function (2nd gen) on Firestore in Datastore mode.
#
# Usage: ALLOWED_ORIGINS=https://your.site ./deploy.sh [--project=ID] [--dry-run] [--smoke]
#            [--gateway | --public] [--budget=AMOUNT] [--github=OWNER/REPO | --deploy-only]
#        ./deploy.sh --reopen [--project=ID] [--dry-run]
#
#   --project=ID  the Google Cloud project (else GOOGLE_CLOUD_PROJECT, else gcloud's config)
#   --dry-run     print every gcloud command, one per line after "+", grouped as those that only
#                 read and those that create or change, and run none of them, not even the
#                 read-only ones: the plan assumes nothing exists yet. Needs only a project (gcloud's
#                 configured one will do) and ALLOWED_ORIGINS, not a login.
#   --gateway     put API Gateway in front of the function, described by openapi.yaml, as the
#                 only way in: the function is private (allUsers, if an earlier deploy let them
#                 in, is removed), and the gateway calls it as an account of its own that may
#                 only invoke it. Paste the gateway's URL into the page.
#   --public      make the function's own URL public again after a --gateway deploy (without
#                 it such a deploy is refused); the gateway stays, as a second way in
#   --smoke       after deploying, call the live URL with scripts/smoke.sh
#   --budget=AMOUNT
#                 also a monthly billing budget of AMOUNT (e.g. 5 or 10.50, in the billing
#                 account's currency) on this project's spend, which emails the billing account's
#                 administrators at 50 %, 90 % and 100 % of it, and a guard that stops the bill:
#                 the budget publishes to a Pub/Sub topic, and the guard function (guard/) takes
#                 the counter off the internet once the month's cost reaches CLOSE_AT of the
#                 budget (it removes allUsers, and the gateway's account, from the invokers of
#                 the counter's Cloud Run service). Found again by name: the budget
#                 "Visit counter (PROJECT)", the topic, the guard's account and role. Without a
#                 billing account linked to the project it says so and goes on.
#   --reopen      let visitors in again after the guard closed the counter, and change nothing
#                 else: allUsers may invoke the function again, or where a run had --gateway
#                 (its account exists), the gateway's account may. While the month's cost is
#                 past CLOSE_AT of the budget, the guard closes it again: raise the budget first.
#   --github=OWNER/REPO
#                 also let GitHub Actions in that repository deploy, without a key: a workload
#                 identity pool and OIDC provider that admit only pushes to its main branch, and
#                 a deployer service account with the roles a --deploy-only run needs; prints
#                 the repository variables to set. OWNER/REPO as GitHub spells it (case counts).
#   --deploy-only deploy a new revision of the existing function and change nothing else: no
#                 APIs, database, TTL policies, accounts or IAM, and the function's public access
#                 stays as the first run set it. What the Deploy workflow runs, as the deployer.
#   --help        print this text
#
# Settings, from the environment (default in brackets):
#   ALLOWED_ORIGINS       required: the site(s) that call the counter, comma-separated,
#                         e.g. https://me.example,https://www.me.example; * allows any site
#   GOOGLE_CLOUD_PROJECT  the project [gcloud config get-value project]
#   REGION                where the function runs [us-central1]
#   FUNCTION_NAME         [visits]
#   RUNTIME               a Python 3 runtime of Cloud Functions [python312]
#   MAX_INSTANCES         the cost ceiling: at most this many instances ever run [3]
#   CPU                   vCPUs per instance; a new instance starts about 6x faster with 1
#                         than with the 0.167 that 256Mi alone gets (docs/benchmark.md) [1]
#   MEMORY                per instance [512Mi]
#   CONCURRENCY           requests per instance at once (more than 1 needs CPU of at least
#                         1); also the function's THREADS [8]
#   MIN_INSTANCES         instances kept warm: no cold start, but each is billed while idle,
#                         about $10 a month at 1 CPU and 512Mi (docs/cost.md) [0]
#   SERVICE_ACCOUNT_NAME  the function's own service account, created here [visit-counter]
#   DATASTORE_DATABASE    the Firestore database, in Datastore mode [(default)]
#   FIRESTORE_LOCATION    where to create that database if it does not exist [REGION]
#   GATEWAY_ID, API_ID    names for --gateway [FUNCTION_NAME-gateway, FUNCTION_NAME]
#   GATEWAY_ACCOUNT_NAME  the service account the gateway calls the function as, for --gateway
#                         [visit-counter-gateway]
#   CLOSE_AT              for --budget: the guard closes the counter when the month's cost
#                         reaches this fraction of the budget, e.g. 0.9 [1.0]
#   GUARD_NAME, BUDGET_TOPIC  the guard function and its Pub/Sub topic, for --budget
#                         [FUNCTION_NAME-guard, FUNCTION_NAME-budget]
#   GUARD_ACCOUNT_NAME, GUARD_ROLE_ID  the guard's service account, and its custom role of
#                         this project, bound on the counter's service only
#                         [visit-counter-guard, visitCounterGuard]
#   WIF_POOL, WIF_PROVIDER  the workload identity pool and provider for --github
#                         [github, visit-counter]
#   DEPLOYER_NAME         the service account GitHub Actions deploys as, for --github
#                         [visit-counter-deployer]
#   REPOSITORY_VARIABLES  the repository variables as JSON, ${{ toJSON(vars) }}, which the
#                         Deploy workflow passes: the function's settings are read there too
#
# It enables the APIs it needs, creates the Datastore-mode database, its TTL policies and the
# function's service account if missing, grants that account roles/datastore.user, deploys.
# Safe to run again: it creates only what is missing, and deploys a new revision. Who may call
# an existing function changes only when asked (--gateway, --public, --reopen): a counter the
# budget guard closed stays closed, and the deploy says so. In GitHub Actions ($GITHUB_OUTPUT
# set) it also hands the URL to later steps as the step output `url`.
# Needs python3 (3.9 or later), even for --dry-run: it reads the function's settings with it.
#
# The function's own settings come from counter/config.py (docs/configuration.md), and --help
# lists them last. Each is passed on when set, in the environment or else in
# REPOSITORY_VARIABLES; left unset, it gets its deployed default, shown in brackets, or else the
# function's own default:
set -euo pipefail

# The settings a --deploy-only run reads besides the project, ALLOWED_ORIGINS and the function's
# settings. Those this run is given, --github prints as repository variables, so a deploy from
# GitHub matches it.
DEPLOY_SETTINGS=(REGION FUNCTION_NAME RUNTIME MAX_INSTANCES MIN_INSTANCES CPU MEMORY CONCURRENCY
    SERVICE_ACCOUNT_NAME DATASTORE_DATABASE)
GIVEN_SETTINGS=()
for name in "${DEPLOY_SETTINGS[@]}"; do
    if [[ -n ${!name:-} ]]; then
        GIVEN_SETTINGS+=("$name")
    fi
done
# The function's passed-on settings, from counter/config.py (read_function_settings); those given
# join GIVEN_SETTINGS.
FUNCTION_SETTINGS=()

REGION=${REGION:-us-central1}
FUNCTION_NAME=${FUNCTION_NAME:-visits}
RUNTIME=${RUNTIME:-python312}
MAX_INSTANCES=${MAX_INSTANCES:-3}
# Most visits to a small site start a new instance, and start-up is CPU-bound: 1 CPU makes the
# first visit fast, and it allows concurrency above 1, so a burst shares a warm instance instead
# of starting more. Billed only while serving; a personal site stays in the free tier.
CPU=${CPU:-1}
MEMORY=${MEMORY:-512Mi}
CONCURRENCY=${CONCURRENCY:-8}
MIN_INSTANCES=${MIN_INSTANCES:-0}
SERVICE_ACCOUNT_NAME=${SERVICE_ACCOUNT_NAME:-visit-counter}
DATASTORE_DATABASE=${DATASTORE_DATABASE:-(default)}
FIRESTORE_LOCATION=${FIRESTORE_LOCATION:-$REGION}
API_ID=${API_ID:-$FUNCTION_NAME}
GATEWAY_ID=${GATEWAY_ID:-$FUNCTION_NAME-gateway}
WIF_POOL=${WIF_POOL:-github}
WIF_PROVIDER=${WIF_PROVIDER:-visit-counter}
DEPLOYER_NAME=${DEPLOYER_NAME:-visit-counter-deployer}
GATEWAY_ACCOUNT_NAME=${GATEWAY_ACCOUNT_NAME:-visit-counter-gateway}
CLOSE_AT=${CLOSE_AT:-1.0}
GUARD_NAME=${GUARD_NAME:-$FUNCTION_NAME-guard}
BUDGET_TOPIC=${BUDGET_TOPIC:-$FUNCTION_NAME-budget}
GUARD_ACCOUNT_NAME=${GUARD_ACCOUNT_NAME:-visit-counter-guard}
GUARD_ROLE_ID=${GUARD_ROLE_ID:-visitCounterGuard}
# All the guard's role may do, on the one service it is bound on: read it and its IAM policy,
# and write that policy (guard/main.py removes members from the invoker binding).
GUARD_PERMISSIONS=(run.services.get run.services.getIamPolicy run.services.setIamPolicy)
# Who may call the function, as IAM members: the public, or (--gateway) the gateway alone.
PUBLIC_MEMBER=allUsers
INVOKER_ROLE=roles/run.invoker
# Where GitHub's OIDC tokens come from, and the one branch whose pushes may deploy.
GITHUB_ISSUER=https://token.actions.githubusercontent.com
GITHUB_DEPLOY_REF=refs/heads/main
# The budget's alerts, as fractions of its amount.
BUDGET_THRESHOLDS=(0.5 0.9 1.0)
# Unique-visitor markers and daily salts carry an expiry time; TTL policies on it delete them,
# which is what keeps old visitor hashes unlinkable (docs/privacy.md).
# counter/unique_visitors.py names the kinds and the property.
TTL_KINDS=(VisitMarker VisitorSalt)
TTL_PROPERTY=expire_at
# The delimiter of --set-env-vars (see `gcloud topic escaping`): origins hold commas.
ENV_DELIMITER=";"

DRY_RUN=0
PLAN_READS=()
PLAN_CREATES=()
GATEWAY=0
PUBLIC=0
REOPEN=0
# What choose_access decides; --deploy-only leaves them so: no access flag, nothing admitted.
ACCESS_FLAG=()
ADMIT_GATEWAY=0
CLOSED_NOTE=""
BUDGET_ID="" # the budget the guard hears, once ensure_budget found or made it
SMOKE=0
DEPLOY_ONLY=0
GITHUB_REPO=""
BUDGET=""
PROJECT=${GOOGLE_CLOUD_PROJECT:-}

main() {
    parse_args "$@"
    # --source=., openapi.yaml and scripts/deploy_settings.py are relative to here.
    cd "$(dirname "${BASH_SOURCE[0]}")"
    read_function_settings
    check_prerequisites
    local sa_email="$SERVICE_ACCOUNT_NAME@$PROJECT.iam.gserviceaccount.com"
    # The gateway's account as an IAM member: with --gateway, the function's one invoker. The
    # guard and --reopen need it whether or not this run has --gateway.
    GATEWAY_MEMBER="serviceAccount:$GATEWAY_ACCOUNT_NAME@$PROJECT.iam.gserviceaccount.com"
    if ((DRY_RUN)); then
        say "Dry run: nothing is run; the plan assumes nothing exists yet in project $PROJECT."
    fi
    if ((REOPEN)); then
        reopen
        print_plan
        return
    fi

    if ((DEPLOY_ONLY)); then
        require_function
    else
        local apis=(cloudfunctions run cloudbuild artifactregistry datastore firestore iam logging)
        if ((GATEWAY)); then
            apis+=(apigateway servicemanagement servicecontrol)
        fi
        if [[ -n $GITHUB_REPO ]]; then
            # GitHub's token is exchanged (sts) for the deployer's (iamcredentials).
            apis+=(sts iamcredentials cloudresourcemanager)
        fi
        if [[ -n $BUDGET ]]; then
            # The budget publishes to Pub/Sub, and Eventarc delivers that to the guard (a
            # function like the counter, so run and cloudbuild too, enabled above).
            apis+=(cloudbilling billingbudgets pubsub eventarc)
        fi
        run gcloud services enable "${apis[@]/%/.googleapis.com}" --project="$PROJECT"

        ensure_database
        ensure_ttl_policies
        ensure_service_account "$SERVICE_ACCOUNT_NAME" \
            "Visit counter (Cloud Function $FUNCTION_NAME)" \
            "Runs the $FUNCTION_NAME function; may read and write Datastore only"
        # Only what counting needs, on this account alone; never the default compute account.
        with_retries run gcloud projects add-iam-policy-binding "$PROJECT" \
            --member="serviceAccount:$sa_email" --role=roles/datastore.user --condition=None \
            --format=none
        if [[ -n $GITHUB_REPO ]]; then
            setup_github "$sa_email"
        fi
        # Before the function's access changes, as it may refuse the run (going back from
        # --gateway without --public): what ran so far finds everything there already.
        choose_access
        if ((GATEWAY)); then
            ensure_service_account "$GATEWAY_ACCOUNT_NAME" "Gateway of $FUNCTION_NAME" \
                "API Gateway calls the $FUNCTION_NAME function as this account; it may only invoke it"
        fi
    fi

    local deploy=(gcloud functions deploy "$FUNCTION_NAME" --gen2 --runtime="$RUNTIME"
        --region="$REGION" --source=. --entry-point=visits --trigger-http
        --service-account="$sa_email" --max-instances="$MAX_INSTANCES"
        --min-instances="$MIN_INSTANCES" --cpu="$CPU" --memory="$MEMORY"
        --concurrency="$CONCURRENCY" --set-env-vars="$(function_env)"
        --project="$PROJECT" --quiet)
    # None for --deploy-only (its deployer may not set IAM policies) or for an existing function
    # whose access stays: gcloud then leaves who may call it as it is.
    deploy+=(${ACCESS_FLAG[@]+"${ACCESS_FLAG[@]}"})
    run "${deploy[@]}"
    # What the dry run shows in place of the real ones; a 2nd gen function's Cloud Run service
    # is named after it.
    local url="https://FUNCTION_URL"
    local service="projects/$PROJECT/locations/$REGION/services/$FUNCTION_NAME"
    if read_value gcloud functions describe "$FUNCTION_NAME" --v2 --region="$REGION" \
        --project="$PROJECT" --format="value(serviceConfig.uri,serviceConfig.service)"; then
        url=${VALUE%%$'\t'*} service=${VALUE#*$'\t'}
    fi
    if [[ -z $url || $VALUE != *$'\t'projects/* ]] && ((!DRY_RUN)); then
        die "function $FUNCTION_NAME was deployed but has no URL yet; run the script again"
    fi

    local endpoint="${url%/}/" # as web/counter.js documents it
    if ((GATEWAY)); then
        if ((ADMIT_GATEWAY)); then
            # The gateway's account may invoke this one service, and nothing else.
            admit "$service" "$GATEWAY_MEMBER" "$INVOKER_ROLE"
        fi
        deploy_gateway "$url" "${GATEWAY_MEMBER#serviceAccount:}"
        endpoint=$GATEWAY_URL
    fi
    if [[ -n $BUDGET ]]; then
        # After the deploy: a refusal here must not keep the counter from being deployed. Not
        # `if ensure_budget`: bash ignores set -e inside a function called as a condition.
        ensure_budget
        if [[ -n $BUDGET_ID ]]; then
            deploy_guard "$service"
        fi
    fi
    if ((SMOKE)); then
        run scripts/smoke.sh --origin="$(first_origin)" "$endpoint"
    fi
    if [[ -n ${GITHUB_OUTPUT:-} ]] && ((!DRY_RUN)); then
        printf 'url=%s\n' "$endpoint" >>"$GITHUB_OUTPUT"
    fi
    print_plan
    if [[ -n $GITHUB_REPO ]]; then
        print_github_variables
    fi
    if [[ -n $CLOSED_NOTE ]]; then
        say ""
        say "$CLOSED_NOTE"
    fi
    # Last, so that what to paste into the page is what a newcomer sees at the end.
    print_summary "$url" "$endpoint"
}

# The header above, then the function's settings as counter/config.py has them.
usage() {
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"
    cd "$(dirname "${BASH_SOURCE[0]}")" # the script exits after the help
    deploy_settings --defaults
    local line
    while IFS= read -r line; do
        split_setting "$line"
        if [[ $SOURCE == deployed ]]; then
            say "  $SETTING [$SETTING_VALUE]"
        else
            say "  $SETTING"
        fi
    done <<<"$VALUE"
}

parse_args() {
    while (($#)); do
        case $1 in
        --project=*) PROJECT=${1#--project=} ;;
        --project)
            (($# > 1)) || die "--project needs a value, e.g. --project=my-project"
            PROJECT=$2
            shift
            ;;
        --dry-run) DRY_RUN=1 ;;
        --gateway) GATEWAY=1 ;;
        --public) PUBLIC=1 ;;
        --reopen) REOPEN=1 ;;
        --smoke) SMOKE=1 ;;
        --github=*) GITHUB_REPO=${1#--github=} && check_github_repo ;;
        --github)
            GITHUB_REPO=${2:-} && check_github_repo
            shift
            ;;
        --deploy-only) DEPLOY_ONLY=1 ;;
        --budget=*) BUDGET=${1#--budget=} && check_budget ;;
        --budget)
            BUDGET=${2:-} && check_budget
            shift
            ;;
        -h | --help) usage && exit 0 ;;
        *) die "unknown argument $1; see ./deploy.sh --help" ;;
        esac
        shift
    done
    if ((DEPLOY_ONLY)) && [[ -n $GITHUB_REPO ]]; then
        die "--deploy-only changes nothing but the function, and --github sets up access: use one"
    fi
    if ((DEPLOY_ONLY)) && [[ -n $BUDGET ]]; then
        die "--deploy-only changes nothing but the function; set the budget with a full run: ./deploy.sh --budget=$BUDGET"
    fi
    if ((DEPLOY_ONLY && (GATEWAY || PUBLIC))); then
        die "--deploy-only changes nothing but the function and keeps who may call it; change the way in with a full run (the same flags without --deploy-only)"
    fi
    if ((GATEWAY && PUBLIC)); then
        die "--gateway makes the gateway the only way in, and --public opens the function's own URL to everyone: use one"
    fi
    if ((REOPEN)) && [[ $GATEWAY$PUBLIC$SMOKE$DEPLOY_ONLY != 0000 || -n $GITHUB_REPO$BUDGET ]]; then
        die "--reopen only lets visitors in again and deploys nothing: use it alone (--project and --dry-run may come with it)"
    fi
    if [[ -n $BUDGET ]]; then
        [[ $CLOSE_AT =~ ^[0-9]+([.][0-9]+)?$ && $CLOSE_AT =~ [1-9] ]] ||
            die "CLOSE_AT needs a fraction of the budget above zero, e.g. CLOSE_AT=0.9 or CLOSE_AT=1 (got '$CLOSE_AT')"
    fi
}

# An amount in the billing account's currency, as budgets take it: units and up to two decimals.
check_budget() {
    [[ $BUDGET =~ ^[0-9]+([.][0-9]{1,2})?$ && $BUDGET =~ [1-9] ]] ||
        die "--budget needs an amount above zero, e.g. --budget=5 or --budget=10.50 (got '$BUDGET')"
}

# GitHub's own rule for owner and repository names; the provider's condition compares them.
check_github_repo() {
    [[ $GITHUB_REPO =~ ^[A-Za-z0-9-]+/[A-Za-z0-9._-]+$ ]] ||
        die "--github needs the repository as OWNER/REPO, e.g. --github=you/your-site (got '$GITHUB_REPO')"
}

# The function's passed-on settings and their values, from counter/config.py: each given or
# deployed one is set here (printf -v, never eval), and those given join GIVEN_SETTINGS.
read_function_settings() {
    deploy_settings
    local line
    while IFS= read -r line; do
        split_setting "$line"
        FUNCTION_SETTINGS+=("$SETTING")
        if [[ $SOURCE == given ]]; then
            GIVEN_SETTINGS+=("$SETTING")
        fi
        if [[ $SOURCE != unset ]]; then
            printf -v "$SETTING" '%s' "$SETTING_VALUE"
        fi
    done <<<"$VALUE"
}

# Run scripts/deploy_settings.py and keep its lines in VALUE; stop with its message if it
# refuses a value. A command substitution, so its exit status is checked (set -e would not see
# a process substitution fail).
deploy_settings() {
    command -v python3 >/dev/null ||
        die "python3 is not installed, and deploy.sh reads the function's settings from counter/config.py with it; install Python 3.9 or later (apt-get install python3, or https://www.python.org/downloads/)"
    python3 -E -c 'import sys; sys.exit(sys.version_info < (3, 9))' ||
        die "$(python3 -E -V 2>&1) is too old: deploy.sh reads the function's settings from counter/config.py with Python 3.9 or later; install a newer python3"
    if ! VALUE=$(python3 -E -m scripts.deploy_settings "$@" 2>"$WORK_DIR/stderr"); then
        die "$(cat "$WORK_DIR/stderr")"
    fi
}

# One line of scripts/deploy_settings.py, "NAME SOURCE VALUE" or "NAME unset", split at its first
# two spaces into SETTING, SOURCE and SETTING_VALUE, so the value stays whole.
split_setting() {
    local line=$1
    SETTING=${line%% *}
    line=${line#* }
    SOURCE=${line%% *}
    SETTING_VALUE=${line#"$SOURCE"}
    SETTING_VALUE=${SETTING_VALUE# }
    [[ $SETTING =~ ^[A-Z][A-Z0-9_]*$ && $SOURCE =~ ^(given|deployed|unset)$ ]] ||
        die "scripts/deploy_settings.py printed a line deploy.sh cannot read: $1"
}

# Every check runs before anything is created; each failure says how to fix it.
check_prerequisites() {
    if ((!DRY_RUN)); then
        command -v gcloud >/dev/null ||
            die "gcloud is not installed; install the Google Cloud CLI: https://cloud.google.com/sdk/docs/install"
        local account
        # 2>/dev/null: with no account at all, gcloud also warns that no resource has a status.
        account=$(gcloud auth list --filter=status:ACTIVE --format="value(account)" 2>/dev/null ||
            true)
        [[ -n $account ]] || die "no account is logged in to gcloud; run: gcloud auth login"
    fi
    # gcloud's configured project, as `gcloud init` set it; reading it sends nothing to Google,
    # so a dry run takes it too when gcloud is installed.
    if [[ -z $PROJECT ]] && command -v gcloud >/dev/null; then
        PROJECT=$(gcloud config get-value project 2>/dev/null || true)
    fi
    [[ -n $PROJECT ]] ||
        die "no project; set GOOGLE_CLOUD_PROJECT=your-project, pass --project=your-project or run: gcloud config set project your-project"
    # --reopen changes nothing of the function; what follows is checked for a deploy only.
    ((!REOPEN)) || return 0
    [[ -n ${ALLOWED_ORIGINS:-} ]] ||
        die "ALLOWED_ORIGINS is not set; set it to the site that shows the counter, e.g. ALLOWED_ORIGINS=https://me.example ./deploy.sh"
    local origins origin
    IFS=, read -ra origins <<<"$ALLOWED_ORIGINS"
    for origin in "${origins[@]}"; do
        origin=${origin// /}
        # Any site could then count visits on a deployed counter: * is for a local run only.
        [[ $origin != "*" ]] ||
            die "ALLOWED_ORIGINS='*' would let any site's pages count visits here; name your site, e.g. ALLOWED_ORIGINS=https://me.example (* is for make run only)"
        [[ -z $origin || $origin =~ ^https?://[^/]+/?$ ]] ||
            die "ALLOWED_ORIGINS: '$origin' is not an origin; write it as https://me.example (scheme and host, no path)"
    done
    local name
    for name in ALLOWED_ORIGINS DATASTORE_DATABASE "${FUNCTION_SETTINGS[@]}"; do
        [[ ${!name:-} != *"$ENV_DELIMITER"* ]] ||
            die "$name must not contain '$ENV_DELIMITER' (it separates the function's settings)"
    done
}

ensure_database() {
    if read_value gcloud firestore databases describe --database="$DATASTORE_DATABASE" \
        --project="$PROJECT" --format="value(type)"; then
        case $VALUE in
        DATASTORE_MODE) return ;;
        FIRESTORE_NATIVE)
            die "database $DATASTORE_DATABASE of project $PROJECT is in Firestore Native mode, and the counter needs Datastore mode; left untouched. Use another project, or DATASTORE_DATABASE=visits to create a second database in Datastore mode (outside the free quota)"
            ;;
        *) die "database $DATASTORE_DATABASE has an unknown type '$VALUE'; check it in the console" ;;
        esac
    fi
    # The free quota covers only the (default) database of a project.
    run gcloud firestore databases create --database="$DATASTORE_DATABASE" \
        --location="$FIRESTORE_LOCATION" --type=datastore-mode --project="$PROJECT"
}

ensure_ttl_policies() {
    local enabled=""
    if read_value gcloud firestore fields ttls list --database="$DATASTORE_DATABASE" \
        --project="$PROJECT" --format="value(name)"; then
        enabled=$VALUE
    fi
    local kind
    for kind in "${TTL_KINDS[@]}"; do
        if [[ $enabled != *"/$kind/fields/$TTL_PROPERTY"* ]]; then
            # --async: a new policy takes minutes to become active, and nothing here waits on it.
            run gcloud firestore fields ttls update "$TTL_PROPERTY" --collection-group="$kind" \
                --database="$DATASTORE_DATABASE" --enable-ttl --async --project="$PROJECT"
        fi
    done
}

# A service account of this project, created if missing: its name, display name and description.
ensure_service_account() {
    local name=$1 display=$2 description=$3
    if ! read_value gcloud iam service-accounts describe "$name@$PROJECT.iam.gserviceaccount.com" \
        --project="$PROJECT" --format="value(email)"; then
        run gcloud iam service-accounts create "$name" --display-name="$display" \
            --description="$description" --project="$PROJECT"
    fi
}

# --deploy-only updates the function a full run made; creating it is the owner's first run.
require_function() {
    if ! read_value gcloud functions describe "$FUNCTION_NAME" --v2 --region="$REGION" \
        --project="$PROJECT" --format="value(name)" && ((!DRY_RUN)); then
        die "function $FUNCTION_NAME does not exist in $REGION of project $PROJECT, and --deploy-only only updates it: run ./deploy.sh once without --deploy-only first"
    fi
}

# Who may call the function after this deploy: ACCESS_FLAG for `functions deploy`, and with
# --gateway whether to let the gateway's account in (ADMIT_GATEWAY). A new function gets the
# way in asked for. An existing one keeps its invokers unless a flag changes them, so a counter
# the budget guard closed stays closed, and CLOSED_NOTE says so: `functions deploy
# --allow-unauthenticated` on it would put allUsers back, silently undoing the guard.
choose_access() {
    ACCESS_FLAG=() ADMIT_GATEWAY=0 CLOSED_NOTE=""
    local exists=0 invokers=" "
    if read_value gcloud functions describe "$FUNCTION_NAME" --v2 --region="$REGION" \
        --project="$PROJECT" --format="value(serviceConfig.service)" && [[ -n $VALUE ]]; then
        exists=1
        if read_value gcloud run services get-iam-policy "${VALUE##*/}" --region="$REGION" \
            --project="$PROJECT" --flatten="bindings[].members" \
            --filter="bindings.role=$INVOKER_ROLE" --format="value(bindings.members)"; then
            invokers=" ${VALUE//$'\n'/ } "
        fi
    fi
    local reopen="This deploy kept it closed; to let visitors in again: ./deploy.sh --reopen"
    if ((GATEWAY)); then
        # gcloud takes allUsers out of an existing function's invoker binding for this flag
        # (command_lib/functions/v2/deploy/command.py), and a new one never has it.
        ACCESS_FLAG=(--no-allow-unauthenticated)
        if ((!exists)) || [[ $invokers == *" $PUBLIC_MEMBER "* ]]; then
            ADMIT_GATEWAY=1 # new, or public until now
        elif [[ $invokers != *" $GATEWAY_MEMBER "* ]]; then
            CLOSED_NOTE="The counter is closed: the gateway may not call the function (its account is not an invoker), as the budget guard leaves it once the budget is spent. $reopen"
        fi
    elif ((PUBLIC || !exists)); then
        ACCESS_FLAG=(--allow-unauthenticated)
    elif [[ $invokers == *" $GATEWAY_MEMBER "* && $invokers != *" $PUBLIC_MEMBER "* ]]; then
        die "function $FUNCTION_NAME is private behind its gateway (an earlier run had --gateway), and this run has no --gateway; left as it is. Run with --gateway to keep it so, or with --public to open the function's own URL to everyone too"
    elif [[ $invokers != *" $PUBLIC_MEMBER "* ]]; then
        CLOSED_NOTE="The counter is closed: no visitor may call the function (allUsers is not an invoker), as the budget guard leaves it once the budget is spent. $reopen"
    fi
}

# Let a member have a role on the counter's Cloud Run service: a binding on that one service,
# never on the project. Retried, as a new service account takes a few seconds to be seen.
admit() {
    local service=$1 member=$2 role=$3
    with_retries run gcloud run services add-iam-policy-binding "${service##*/}" \
        --region="$REGION" --member="$member" --role="$role" --project="$PROJECT" --format=none
}

# --reopen: let visitors in again after the guard closed the counter, and change nothing else.
# With a gateway, that way in is the gateway's account; the function's own URL stays private.
reopen() {
    if ! read_value gcloud functions describe "$FUNCTION_NAME" --v2 --region="$REGION" \
        --project="$PROJECT" --format="value(name)" && ((!DRY_RUN)); then
        die "function $FUNCTION_NAME does not exist in $REGION of project $PROJECT, so there is nothing to reopen; deploy it first: ALLOWED_ORIGINS=https://your.site ./deploy.sh"
    fi
    # The gateway's account exists once a run had --gateway (asking API Gateway itself would
    # fail where its API was never enabled).
    local member=$PUBLIC_MEMBER way="its own URL"
    if read_value gcloud iam service-accounts describe "${GATEWAY_MEMBER#serviceAccount:}" \
        --project="$PROJECT" --format="value(email)"; then
        member=$GATEWAY_MEMBER way="the gateway $GATEWAY_ID"
    fi
    run gcloud functions add-invoker-policy-binding "$FUNCTION_NAME" --region="$REGION" \
        --member="$member" --project="$PROJECT" --format=none
    if ((!DRY_RUN)); then
        say "Reopened: visitors may call $FUNCTION_NAME again, through $way. While this month's cost is past CLOSE_AT of the budget, the guard closes it again at its next notification (several a day): raise the budget first."
    fi
}

# Keyless deploys from GitHub Actions: GitHub's OIDC token for a push to the repository's main
# branch is exchanged for the deployer account's, and that account may only deploy.
setup_github() {
    local runtime_sa=$1 number=PROJECT_NUMBER # what the dry run shows in place of the real one
    if read_value gcloud projects describe "$PROJECT" --format="value(projectNumber)"; then
        number=$VALUE
    elif ((!DRY_RUN)); then
        die "project $PROJECT has no number yet; run the script again"
    fi
    local pool="projects/$number/locations/global/workloadIdentityPools/$WIF_POOL"
    GITHUB_PROVIDER="$pool/providers/$WIF_PROVIDER"
    GITHUB_DEPLOYER="$DEPLOYER_NAME@$PROJECT.iam.gserviceaccount.com"
    ensure_pool
    ensure_provider
    ensure_service_account "$DEPLOYER_NAME" "GitHub deployer of $FUNCTION_NAME" \
        "Deploys the $FUNCTION_NAME function from GitHub Actions; nothing else"
    # Deploy and read functions and their builds: no IAM, no data, no setup (docs/deploy.md lists why).
    with_retries run gcloud projects add-iam-policy-binding "$PROJECT" \
        --member="serviceAccount:$GITHUB_DEPLOYER" --role=roles/cloudfunctions.developer \
        --condition=None --format=none
    # A function runs as its runtime account, so deploying one means acting as that account.
    with_retries run gcloud iam service-accounts add-iam-policy-binding "$runtime_sa" \
        --member="serviceAccount:$GITHUB_DEPLOYER" --role=roles/iam.serviceAccountUser \
        --condition=None --project="$PROJECT" --format=none
    # Only tokens of this repository, which the provider admitted, may act as the deployer.
    with_retries run gcloud iam service-accounts add-iam-policy-binding "$GITHUB_DEPLOYER" \
        --member="principalSet://iam.googleapis.com/$pool/attribute.repository/$GITHUB_REPO" \
        --role=roles/iam.workloadIdentityUser --condition=None --project="$PROJECT" \
        --format=none
}

ensure_pool() {
    if read_value gcloud iam workload-identity-pools describe "$WIF_POOL" --location=global \
        --project="$PROJECT" --format="value(state)"; then
        if [[ $VALUE == DELETED ]]; then
            # A deleted pool keeps its name for 30 days: bring it back rather than fail to create.
            run gcloud iam workload-identity-pools undelete "$WIF_POOL" --location=global \
                --project="$PROJECT"
        fi
        return
    fi
    run gcloud iam workload-identity-pools create "$WIF_POOL" --location=global \
        --display-name="GitHub Actions" --project="$PROJECT"
}

ensure_provider() {
    local condition="assertion.repository == \"$GITHUB_REPO\" && assertion.ref == \"$GITHUB_DEPLOY_REF\""
    local where=(--workload-identity-pool="$WIF_POOL" --location=global --project="$PROJECT")
    if read_value gcloud iam workload-identity-pools providers describe "$WIF_PROVIDER" \
        "${where[@]}" --format="value(state,attributeCondition)"; then
        local state=${VALUE%%$'\t'*} current=${VALUE#*$'\t'}
        if [[ $current != "$condition" ]]; then
            die "provider $WIF_PROVIDER admits ($current), not $GITHUB_REPO's main branch; left untouched. For another repository, set WIF_PROVIDER=another-name; to move this one: $(quote gcloud iam workload-identity-pools providers update-oidc "$WIF_PROVIDER" "${where[@]}" --attribute-condition="$condition")"
        fi
        if [[ $state == DELETED ]]; then
            run gcloud iam workload-identity-pools providers undelete "$WIF_PROVIDER" "${where[@]}"
        fi
        return
    fi
    run gcloud iam workload-identity-pools providers create-oidc "$WIF_PROVIDER" "${where[@]}" \
        --issuer-uri="$GITHUB_ISSUER" \
        --attribute-mapping="google.subject=assertion.sub,attribute.repository=assertion.repository,attribute.ref=assertion.ref" \
        --attribute-condition="$condition" --display-name="GitHub Actions deploys" \
        --description="Pushes to main of $GITHUB_REPO deploy $FUNCTION_NAME"
}

# A monthly budget on this project's spend, alerting the billing account's administrators by
# email at each threshold, and publishing to the guard's topic (created here) as well. Found
# again by its display name, so a second run creates none; one without the topic gets it. Sets
# BUDGET_ID, the budget the guard is to hear, or leaves it empty when there is none.
ensure_budget() {
    local enabled="" account="billingAccounts/BILLING_ACCOUNT_ID" currency=CURRENCY
    if read_value gcloud billing projects describe "$PROJECT" \
        --format="value(billingEnabled,billingAccountName)"; then
        IFS=$'\t' read -r enabled account <<<"$VALUE"
        if [[ $enabled != True || -z $account ]]; then
            say "No budget: project $PROJECT has no billing account (billing is not enabled), so it can spend nothing beyond the free tier. After linking one, run again with --budget=$BUDGET."
            return
        fi
    fi
    local id=${account#billingAccounts/} name="Visit counter ($PROJECT)"
    # Budgets are in the billing account's currency, and Google refuses any other.
    if read_value gcloud billing accounts describe "$id" --format="value(currencyCode)"; then
        currency=$VALUE
    fi
    # The topic the guard listens on; Google wants it to exist before a budget names it.
    local topic="projects/$PROJECT/topics/$BUDGET_TOPIC"
    if ! read_value gcloud pubsub topics describe "$BUDGET_TOPIC" --project="$PROJECT" \
        --format="value(name)"; then
        run gcloud pubsub topics create "$BUDGET_TOPIC" --project="$PROJECT" --format=none
    fi
    local list=(gcloud billing budgets list --billing-account="$id"
        --filter="displayName=\"$name\"" --format="value(name,notificationsRule.pubsubTopic)")
    if read_value "${list[@]}" && [[ -n $VALUE ]]; then
        local budget=${VALUE%%$'\t'*} current=${VALUE#*$'\t'}
        if [[ $current == "$topic" ]]; then
            say "Budget \"$name\" exists already ($budget); left as it is."
        elif [[ -z $current ]]; then
            # Its emails stay as they are; only the rule's topic is added.
            run gcloud billing budgets update "$budget" --notifications-rule-pubsub-topic="$topic" \
                --format=none
            say "Budget \"$name\" exists already ($budget); it now also notifies the guard, through $topic."
        else
            say "No guard: budget \"$name\" ($budget) publishes to another topic, $current, left as it is. For the guard to hear it: $(quote gcloud billing budgets update "$budget" --notifications-rule-pubsub-topic="$topic")"
            return
        fi
        BUDGET_ID=${budget##*/}
        return
    fi
    local thresholds=() threshold
    for threshold in "${BUDGET_THRESHOLDS[@]}"; do
        thresholds+=(--threshold-rule="percent=$threshold")
    done
    # The emails as before (the rule keeps the default recipients), and the topic as well.
    run gcloud billing budgets create --billing-account="$id" --display-name="$name" \
        --budget-amount="$BUDGET$currency" --filter-projects="projects/$PROJECT" \
        "${thresholds[@]}" --notifications-rule-pubsub-topic="$topic" --format=none
    BUDGET_ID=BUDGET_ID # what the dry run shows in place of the new budget's id
    if read_value "${list[@]}"; then
        BUDGET_ID=${VALUE%%$'\t'*} && BUDGET_ID=${BUDGET_ID##*/}
    fi
    if ((!DRY_RUN)); then
        say "Budget \"$name\": $BUDGET $currency a month; the billing account's administrators get an email at 50 %, 90 % and 100 %, and the guard closes the counter at $CLOSE_AT of it."
    fi
}

# The guard (guard/): a function on the budget's topic that takes the counter off the internet
# once the month's cost reaches CLOSE_AT of the budget, by taking the public and the gateway out
# of the invokers of the counter's Cloud Run service. It runs as an account of its own, whose
# one role there is a custom one of GUARD_PERMISSIONS, bound on that service alone.
deploy_guard() {
    local service=$1 guard_sa="$GUARD_ACCOUNT_NAME@$PROJECT.iam.gserviceaccount.com"
    ensure_service_account "$GUARD_ACCOUNT_NAME" "Budget guard of $FUNCTION_NAME" \
        "Runs the $GUARD_NAME function; may change who may call $FUNCTION_NAME, nothing else"
    ensure_guard_role
    admit "$service" "serviceAccount:$guard_sa" "projects/$PROJECT/roles/$GUARD_ROLE_ID"
    # CLOSE_MEMBERS: both ways in, whichever this deploy opened; one that is not an invoker is
    # skipped. The members hold a comma, hence the ^;^ delimiter (gcloud topic escaping).
    local env="^;^COUNTER_SERVICE=$service;BUDGET_ID=$BUDGET_ID;CLOSE_AT=$CLOSE_AT"
    env+=";CLOSE_MEMBERS=$PUBLIC_MEMBER,$GATEWAY_MEMBER"
    # --retry: a close that fails (a policy changed meanwhile, Run briefly unavailable) is tried
    # again; the v2 API's triggers drop a failed event otherwise. One instance is plenty.
    run gcloud functions deploy "$GUARD_NAME" --gen2 --runtime="$RUNTIME" --region="$REGION" \
        --source=guard --entry-point=guard --trigger-topic="$BUDGET_TOPIC" \
        --service-account="$guard_sa" --trigger-service-account="$guard_sa" --retry \
        --max-instances=1 --memory=256Mi --set-env-vars="$env" --no-allow-unauthenticated \
        --project="$PROJECT" --quiet
    # The trigger delivers events as the guard's account, which must be let in to the guard.
    run gcloud functions add-invoker-policy-binding "$GUARD_NAME" --region="$REGION" \
        --member="serviceAccount:$guard_sa" --project="$PROJECT" --format=none
}

# The guard's custom role: GUARD_PERMISSIONS and nothing more. A deleted role keeps its id for
# weeks, so it is brought back; one whose permissions were changed is set back.
ensure_guard_role() {
    local permissions
    permissions=$(IFS=,; printf '%s' "${GUARD_PERMISSIONS[*]}")
    if read_value gcloud iam roles describe "$GUARD_ROLE_ID" --project="$PROJECT" \
        --format="value(deleted,includedPermissions.join(','))"; then
        local deleted=${VALUE%%$'\t'*} current=${VALUE#*$'\t'}
        if [[ $deleted == True ]]; then
            run gcloud iam roles undelete "$GUARD_ROLE_ID" --project="$PROJECT" --format=none
        fi
        if [[ $current != "$permissions" ]]; then
            run gcloud iam roles update "$GUARD_ROLE_ID" --project="$PROJECT" \
                --permissions="$permissions" --format=none
        fi
        return
    fi
    run gcloud iam roles create "$GUARD_ROLE_ID" --project="$PROJECT" \
        --title="Visit counter guard" \
        --description="Lets a visit counter's budget guard change who may call the counter, bound on its Cloud Run service alone" \
        --permissions="$permissions" --stage=GA --format=none
}

# The function's environment, in gcloud's ^DELIM^ syntax; settings left unset stay unset.
function_env() {
    # THREADS: functions-framework's gunicorn threads, one per concurrent request.
    local pairs=("GOOGLE_CLOUD_PROJECT=$PROJECT" "ALLOWED_ORIGINS=$ALLOWED_ORIGINS"
        "THREADS=$CONCURRENCY")
    if [[ $DATASTORE_DATABASE != "(default)" ]]; then
        pairs+=("DATASTORE_DATABASE=$DATASTORE_DATABASE")
    fi
    local name
    for name in "${FUNCTION_SETTINGS[@]}"; do
        if [[ -n ${!name:-} ]]; then
            pairs+=("$name=${!name}")
        fi
    done
    local IFS=$ENV_DELIMITER
    printf '^%s^%s' "$ENV_DELIMITER" "${pairs[*]}"
}

# API Gateway in front of the function, as the only way in: the function is private, and the
# gateway calls it with an ID token of its own account (sa_email), which may only invoke it.
deploy_gateway() {
    local url=$1 sa_email=$2 config_id
    config_id="$FUNCTION_NAME-$(date -u +%Y%m%d-%H%M%S)" # a config is immutable: one per run
    local spec="$WORK_DIR/openapi.yaml"
    sed "s|FUNCTION_URL_PLACEHOLDER|$url|" openapi.yaml >"$spec"

    if ! read_value gcloud api-gateway apis describe "$API_ID" --project="$PROJECT" \
        --format="value(name)"; then
        run gcloud api-gateway apis create "$API_ID" --project="$PROJECT"
    fi
    run gcloud api-gateway api-configs create "$config_id" --api="$API_ID" \
        --openapi-spec="$spec" --backend-auth-service-account="$sa_email" --project="$PROJECT"
    local verb=create
    if read_value gcloud api-gateway gateways describe "$GATEWAY_ID" \
        --location="$REGION" --project="$PROJECT" --format="value(defaultHostname)"; then
        verb=update
    fi
    run gcloud api-gateway gateways "$verb" "$GATEWAY_ID" --api="$API_ID" \
        --api-config="$config_id" --location="$REGION" --project="$PROJECT"
    GATEWAY_URL="https://GATEWAY_HOST/"
    if read_value gcloud api-gateway gateways describe "$GATEWAY_ID" --location="$REGION" \
        --project="$PROJECT" --format="value(defaultHostname)"; then
        GATEWAY_URL="https://$VALUE/"
    elif ((!DRY_RUN)); then
        die "gateway $GATEWAY_ID was deployed but has no hostname yet; run the script again"
    fi
}

print_summary() {
    local url=$1 endpoint=$2 origin
    origin=$(first_origin)
    say ""
    say "Function URL: $url"
    if [[ $endpoint != "${url%/}/" ]]; then
        say "Gateway URL:  $endpoint"
        say "  The gateway is the way in: the function's own URL now refuses visitors (403)."
    fi
    say ""
    say "Count a visit (-A: curl's own user agent is a bot's, and bots are not counted):"
    say "  curl -X POST -A 'Mozilla/5.0' -H 'Origin: $origin' '${endpoint}?page=/'"
    say ""
    say "Paste into your page (counter.js comes from web/):"
    say "  <span data-visit-counter data-endpoint=\"$endpoint\">–</span>"
    say "  <script src=\"counter.js\" defer></script>"
}

# What the Deploy workflow needs: the two values that let it in, and this run's settings, so a
# deploy from GitHub matches this one.
print_github_variables() {
    local pairs=("GCP_WORKLOAD_IDENTITY_PROVIDER=$GITHUB_PROVIDER"
        "GCP_SERVICE_ACCOUNT=$GITHUB_DEPLOYER" "GCP_PROJECT=$PROJECT"
        "ALLOWED_ORIGINS=$ALLOWED_ORIGINS") name pair
    for name in ${GIVEN_SETTINGS[@]+"${GIVEN_SETTINGS[@]}"}; do
        pairs+=("$name=${!name}")
    done
    say ""
    say "GitHub Actions of $GITHUB_REPO may now deploy on pushes to main, as:"
    say "  GCP_WORKLOAD_IDENTITY_PROVIDER=$GITHUB_PROVIDER"
    say "  GCP_SERVICE_ACCOUNT=$GITHUB_DEPLOYER"
    say ""
    say "Set those, the project and this run's settings as repository variables (gh auth login first):"
    for pair in "${pairs[@]}"; do
        say "  $(quote gh variable set "${pair%%=*}" --repo "$GITHUB_REPO" --body "${pair#*=}")"
    done
}

first_origin() {
    local origin=${ALLOWED_ORIGINS%%,*}
    origin=${origin// /}
    printf '%s' "${origin%/}"
}

# Print a command after "+", then run it; a dry run keeps it for the plan's "creates" instead.
run() {
    if ((DRY_RUN)); then
        PLAN_CREATES+=("+ $(quote "$@")")
        return 0
    fi
    say "+ $(quote "$@")"
    "$@"
}

# A dry run's plan, grouped: what only reads, then what creates or changes something.
print_plan() {
    ((DRY_RUN)) || return 0
    say ""
    say "Reads (these change nothing):"
    printf '%s\n' ${PLAN_READS[@]+"${PLAN_READS[@]}"}
    say ""
    say "Creates or changes:"
    printf '%s\n' ${PLAN_CREATES[@]+"${PLAN_CREATES[@]}"}
}

# Run a read-only command and keep its output in VALUE. Return 1 when it says the thing does
# not exist, and in a dry run (which assumes nothing exists); stop on any other error.
read_value() {
    VALUE=""
    if ((DRY_RUN)); then
        PLAN_READS+=("+ $(quote "$@")")
        return 1
    fi
    if VALUE=$("$@" 2>"$WORK_DIR/stderr"); then
        return 0
    fi
    # Most commands print the API's status; functions --v2 prints "ResponseError: status=[404]".
    if grep -q -e NOT_FOUND -e 'status=\[404\]' "$WORK_DIR/stderr"; then
        return 1
    fi
    cat "$WORK_DIR/stderr" >&2
    die "this failed: $(quote "$@")"
}

# A new service account takes a few seconds to be visible to IAM; retry rather than fail.
with_retries() {
    local attempt
    for attempt in 1 2 3 4; do
        if "$@"; then
            return 0
        fi
        say "retrying in $((attempt * 5)) s..."
        sleep $((attempt * 5))
    done
    "$@"
}

# Words as a shell would need them typed: plain ones bare, others in single quotes.
quote() {
    local word out=()
    for word in "$@"; do
        if [[ $word =~ ^[A-Za-z0-9_./:=@,+-]+$ ]]; then
            out+=("$word")
        else
            out+=("'${word//\'/\'\\\'\'}'")
        fi
    done
    printf '%s' "${out[*]}"
}

say() {
    printf '%s\n' "$*"
}

die() {
    printf 'deploy.sh: %s\n' "$*" >&2
    exit 1
}

WORK_DIR=$(mktemp -d)
trap 'rm -rf "$WORK_DIR"' EXIT
main "$@"
