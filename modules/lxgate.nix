# services.lxgate — the NixOS module. Units, tmpfiles rules and nginx locations come
# from nix/contract.toml through nix/render.nix, the same pure functions whose output
# tests/contract.rs holds byte-equal to `lxgate render`.
#
# nixpkgs option sources (nixos-25.11) this module sets:
#   nixos/modules/system/boot/systemd.nix              systemd.services / systemd.paths / systemd.timers
#   nixos/lib/systemd-unit-options.nix                 description after before requires wants wantedBy unitConfig serviceConfig pathConfig timerConfig path restartTriggers environment
#                                                      (unitOption: list definitions concatenate, e.g. LoadCredential)
#   nixos/modules/system/boot/systemd/tmpfiles.nix     systemd.tmpfiles.settings.<n>.<path>.d.{mode,user,group}
#   nixos/modules/services/databases/postgresql.nix    services.postgresql.{enable,ensureDatabases,ensureUsers.*.{name,ensureDBOwnership}}
#   nixos/modules/services/web-servers/nginx/default.nix, vhost-options.nix, location-options.nix
#                                                      services.nginx.{enable,virtualHosts.<n>.{onlySSL,sslCertificate,sslCertificateKey,extraConfig,locations.<p>.extraConfig}}
#                                                      services.nginx.upstreams.<n>.{servers.<addr>,extraConfig} (default.nix: rendered as
#                                                      "upstream <n> { server <addr> ; <extraConfig> }" in the http block)
#                                                      (a location's name is written verbatim after `location`, so "= /metrics" and
#                                                      "~ regex" keys work; vhost extraConfig goes inside the server block)
#   nixos/modules/config/users-groups.nix              users.users.<n>.{isSystemUser,group,extraGroups,home}, users.groups
#   nixos/modules/system/etc/etc.nix                   environment.etc.<n>.source
#   nixos/modules/misc/assertions.nix                  assertions, warnings
#   pkgs/pkgs-lib/formats.nix                          pkgs.formats.toml
#   nixos/modules/services/backup/restic.nix           services.restic.backups.<n>.{repository,passwordFile,environmentFile,user,
#                                                      initialize,paths,exclude,extraBackupArgs,timerConfig,pruneOpts,backupPrepareCommand}
#                                                      (the unit is systemd.services.restic-backups-<n>; backupPrepareCommand runs in
#                                                      its preStart as `user`; passwordFile becomes RESTIC_PASSWORD_FILE)
#   lib/options.nix                                    lib.mkPackageOption
#   lib/types.nix                                      types.ints.positive (> 0), types.ints.unsigned (>= 0), types.nullOr
{ config, lib, pkgs, ... }:
let
  inherit (lib) mkOption mkEnableOption mkIf types;
  cfg = config.services.lxgate;
  contract = lib.importTOML ../nix/contract.toml;
  format = pkgs.formats.toml { };
  # A contract default derived from the state root ({state}/data, {state}/keys/...).
  underState = builtins.replaceStrings [ "{state}" ] [ cfg.stateDir ];

  # What the options say, under the operator's `settings` (which win).
  derived = {
    role = cfg.role;
    paths = { state = cfg.stateDir; data = cfg.dataDir; };
    host = {
      inherit (cfg) user group;
      keys_group = cfg.keysGroup;
      config = "/etc/lxgate/config.toml";
      nginx = cfg.nginx.enable;
      server_name = cfg.nginx.hostName;
      master_key = cfg.masterKey.file;
    } // lib.optionalAttrs cfg.nginx.enable {
      tls_certificate = toString cfg.nginx.sslCertificate;
      tls_certificate_key = toString cfg.nginx.sslCertificateKey;
    };
    watcher.enable = cfg.watcher.enable;
    sap_import.enable = cfg.sapImport.enable;
    recovery = { enable = cfg.recovery.enable; } // lib.optionalAttrs (cfg.recovery.source != null) { source = toString cfg.recovery.source; };
    hub = {
      transfer_api = cfg.hub.transferApi.enable;
      export = cfg.hub.export.enable;
    } // lib.optionalAttrs (cfg.hub.transferApi.clientCaFile != null) { client_ca_file = toString cfg.hub.transferApi.clientCaFile; }
    // lib.optionalAttrs (cfg.hub.transferApi.nodeKey != null) { hub_node_key = cfg.hub.transferApi.nodeKey; }
    // lib.optionalAttrs cfg.hub.export.enable (lib.filterAttrs (_: v: v != null) {
      url = cfg.hub.export.url;
      node_key = cfg.hub.export.nodeKey;
      target_node_key = cfg.hub.export.targetNodeKey;
      ca_file = if cfg.hub.export.caFile == null then null else toString cfg.hub.export.caFile;
      client_certificate = if cfg.hub.export.clientCertificate == null then null else toString cfg.hub.export.clientCertificate;
      recipient_public_key_file = if cfg.hub.export.recipientPublicKeyFile == null then null else toString cfg.hub.export.recipientPublicKeyFile;
      request_timeout_seconds = cfg.hub.export.requestTimeoutSeconds;
      max_retries = cfg.hub.export.maxRetries;
    });
  } // lib.optionalAttrs cfg.database.createLocally {
    database.url = "host=/run/postgresql dbname=${cfg.user} user=${cfg.user}";
  } // lib.optionalAttrs cfg.backup.enable {
    # services.restic.backups.lxgate runs the backup here, not the rendered
    # lxgate-backup units (backup.enable stays off); the repository is named so that
    # `lxgate backup verify` and `lxgate restore` find it.
    backup.repository = cfg.backup.repository;
  };
  settings = lib.recursiveUpdate derived cfg.settings;

  rendered = import ../nix/render.nix {
    inherit contract settings;
    bin = "${cfg.package}/bin/lxgate";
  };

  configFile = format.generate "lxgate.toml" settings;
  # attic's habit: a config the binary rejects fails nixos-rebuild, not the host.
  checkedConfig = pkgs.runCommand "lxgate-config-checked.toml" { } ''
    env ${envArgs} ${cfg.package}/bin/lxgate --config ${configFile} config check >/dev/null
    cp ${configFile} $out
  '';

  byType = suffix: lib.filterAttrs (n: _: lib.hasSuffix suffix n) rendered.units;
  unitBase = u: {
    description = u.Unit.Description;
    after = u.Unit.After or [ ];
    before = u.Unit.Before or [ ];
    requires = u.Unit.Requires or [ ];
    wants = u.Unit.Wants or [ ];
    wantedBy = (u.Install or { }).WantedBy or [ ];
    unitConfig = removeAttrs u.Unit [ "Description" "After" "Before" "Requires" "Wants" ];
  };
  credentials = lib.mapAttrsToList (name: path: "${name}:${toString path}") cfg.credentials;

  # What restic reads and leaves out: the same lists `lxgate backup run` passes
  # (src/ops/backup/mod.rs paths and excludes).
  backupDir = "${cfg.stateDir}/backup";
  resticUnit = "restic-backups-lxgate";
  backupPaths = [ cfg.stateDir ] ++ lib.optional (!lib.hasPrefix "${cfg.stateDir}/" cfg.dataDir) cfg.dataDir;
  backupExcludes = [
    "${cfg.stateDir}/keys"
    cfg.masterKey.file
    "${rendered.values.storage}/tmp"
    "${backupDir}/scratch-*"
    "${backupDir}/.*.partial-*"
    "${cfg.dataDir}/.lxgate-restore-*"
  ];
  keepOpts = lib.concatLists (lib.mapAttrsToList
    (k: n: lib.optional (n > 0) "--keep-${k} ${toString n}")
    { inherit (cfg.backup.keep) daily weekly monthly; });
  # The hub's envelope keyring reaches only lxgate.service, as credentials named
  # hub-recipient-N; the app finds them through the reference's variable (%d is the
  # unit's credentials directory).
  recipientNames = lib.imap0 (i: _: "hub-recipient-${toString i}") cfg.hub.transferApi.recipientKeyFiles;
  # The environment contract's names (nix/contract.toml [[env]], names and aliases).
  contractEnv = lib.concatMap (e: [ e.name ] ++ e.aliases) contract.env;
  unknownEnv = lib.filter (n: !(lib.elem n contractEnv)) (lib.attrNames cfg.environment);
  envArgs = lib.concatStringsSep " " (lib.mapAttrsToList (n: v: lib.escapeShellArg "${n}=${v}") cfg.environment);
in
{
  options.services.lxgate = {
    enable = mkEnableOption "lxgate, the runtime boundary for clinic patient media";
    package = lib.mkPackageOption pkgs "lxgate" { };
    role = mkOption {
      type = types.enum [ "standalone" "site_node" "central_hub" ];
      default = "standalone";
      description = "ENDOREG_DEPLOYMENT_ROLE of this host.";
    };
    stateDir = mkOption { type = types.str; default = contract.input.state.default; description = "State root (env file, staticfiles, keys)."; };
    dataDir = mkOption { type = types.str; default = underState contract.input.data.default; description = "Data root; put it on a LUKS mount."; };
    user = mkOption { type = types.str; default = contract.input.user.default; description = "Service account."; };
    group = mkOption { type = types.str; default = contract.input.group.default; description = "Service group; nginx joins it to read protected media."; };
    keysGroup = mkOption { type = types.str; default = contract.input.keys_group.default; description = "Group that may read the master key (root:keysGroup 0640)."; };
    masterKey = {
      file = mkOption { type = types.str; default = underState contract.input.master_key.default; description = "Age master identity; lxgate-keys.service creates it if absent."; };
      mode = mkOption { type = types.str; default = "0640"; description = "Mode your secret manager gives the key file. Must be 0640."; };
      owner = mkOption { type = types.str; default = "root"; description = "Owner your secret manager gives the key file. Must be root."; };
      group = mkOption { type = types.str; default = cfg.keysGroup; description = "Group your secret manager gives the key file. Must be keysGroup."; };
    };
    settings = mkOption {
      type = format.type;
      default = { };
      description = "lxgate settings (RFC 42), rendered to /etc/lxgate/config.toml; see src/config/file.rs.";
    };
    environment = mkOption {
      type = types.attrsOf types.str;
      default = { };
      example = { WATCHER_STABLE_AFTER_SECONDS = "10"; ENDOREG_HUB_TRANSFER_MTLS_META_KEY = "HTTP_X_CLIENT_CERT_VERIFIED"; };
      description = "Variables of lxgate's environment contract (nix/contract.toml [[env]]; the README's table), e.g. the values of an lx-annotate env file, for every lxgate unit; checked with `lxgate config check` at build time. Not for secrets: the store is world-readable.";
    };
    credentials = mkOption {
      type = types.attrsOf types.path;
      default = { };
      description = "Secrets passed with LoadCredential= (name → file outside the store), read from $CREDENTIALS_DIRECTORY.";
    };
    deployGate = {
      enable = mkEnableOption "the deploy gate: after a switch that changed lxgate, lxgate-deploy-gate.service runs `lxgate smoke`; if it fails, the snapshot the migration took is restored when the previous generation cannot run on the schema, and the previous system generation is activated. Ingest stays paused (503 + Retry-After, drops left in place) from the migration until smoke passes";
      smokeCa = mkOption { type = types.nullOr types.path; default = null; description = "CA bundle that verifies nginx's certificate for smoke (default: the system's)."; };
      smokePort = mkOption { type = types.port; default = 443; description = "nginx's TLS port for smoke."; };
    };
    database.createLocally = mkOption { type = types.bool; default = true; description = "Local PostgreSQL with peer authentication."; };
    watcher.enable = mkOption { type = types.bool; default = true; description = "Run lxgate-watcher.service."; };
    sapImport.enable = mkEnableOption "the SAP IS-H import path unit";
    recovery = {
      enable = mkEnableOption "the one-shot legacy data recovery";
      source = mkOption { type = types.nullOr types.str; default = null; description = "Legacy data directory to merge from."; };
    };
    nginx = {
      enable = mkOption { type = types.bool; default = true; description = "nginx virtual host with /static/, /media/, /protected_media/ (internal) and the app proxy."; };
      hostName = mkOption { type = types.str; default = config.networking.fqdnOrHostName or "localhost"; description = "Virtual host name."; };
      sslCertificate = mkOption { type = types.nullOr types.path; default = null; description = "TLS certificate."; };
      sslCertificateKey = mkOption { type = types.nullOr types.str; default = null; description = "TLS key (a path outside the store)."; };
    };
    backup = {
      enable = mkEnableOption "backups with restic: services.restic.backups.lxgate runs `lxgate backup prepare` (a dump sealed to the master key, and its manifest) before restic reads the state root (without keys) and the data root. The master key is not in the backup: keep a copy of it somewhere safe, apart from the repository";
      repository = mkOption { type = types.nullOr types.str; default = null; example = "sftp:backup@backup.example.org:/srv/restic/site-a"; description = "The restic repository (services.restic.backups.lxgate.repository)."; };
      passwordFile = mkOption { type = types.nullOr types.str; default = null; example = "/run/keys/restic-password"; description = "File with the repository password, outside the Nix store (root-only is enough): systemd hands it to the backup unit as the credential restic-password."; };
      environmentFile = mkOption { type = types.nullOr types.str; default = null; description = "KEY=VALUE file with the backend's credentials (AWS_*, B2_*, ...), outside the Nix store; systemd reads it as root when the unit starts (services.restic.backups.lxgate.environmentFile)."; };
      initialize = mkOption { type = types.bool; default = false; description = "Create the repository if it does not exist (services.restic.backups.lxgate.initialize)."; };
      timerConfig = mkOption { type = types.attrsOf types.str; default = { OnCalendar = contract.input.backup_on_calendar.default; Persistent = "true"; RandomizedDelaySec = "1h"; }; description = "When the backup runs (services.restic.backups.lxgate.timerConfig)."; };
      # Snapshots `restic forget --prune` keeps after each backup (services.restic.backups.lxgate.pruneOpts); 0 keeps none of that kind.
      keep = lib.genAttrs [ "daily" "weekly" "monthly" ] (k: mkOption {
        type = types.ints.unsigned;
        default = { daily = 7; weekly = 5; monthly = 12; }.${k};
        description = "`restic forget --prune --keep-${k} N` after each backup; 0 keeps none of that kind.";
      });
    };
    hub.transferApi = {
      enable = mkEnableOption "the hub transfer receiver (central_hub only, behind nginx mTLS)";
      clientCaFile = mkOption { type = types.nullOr types.path; default = null; description = "CA that signs site client certificates."; };
      nodeKey = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "hub-berlin";
        description = "This hub's own node key ([hub] hub_node_key): the target_node_key the sites send (their services.lxgate.hub.export.targetNodeKey); a blank target_node_key names this hub too, as in endoreg-db. null: lxgate's default, `hub`.";
      };
      recipientKeyFiles = mkOption {
        type = types.listOf types.str;
        default = [ ];
        description = "X25519 private keys (PKCS#8 PEM, `lxgate keys hub-recipient --out FILE`; root-only files outside the store) that open the sites' media envelopes; passed to lxgate.service as systemd credentials and named in ENDOREG_HUB_TRANSFER_RECIPIENT_PRIVATE_KEY_FILES. Keep an old key listed until no site seals to it.";
      };
    };
    hub.export = {
      enable = mkEnableOption "lxgate-hub-export (site_node): send jobs marked with `lxgate hub-export mark` to the hub. The node secret and the client key are read by systemd from /etc/lxgate/credentials/hub-node-secret and hub-client-key (root-only, outside the store)";
      url = mkOption { type = types.nullOr types.str; default = null; description = "The hub's https base URL."; };
      nodeKey = mkOption { type = types.nullOr types.str; default = null; description = "This site's node key at the hub (`lxgate node add` there)."; };
      targetNodeKey = mkOption { type = types.nullOr types.str; default = null; description = "The hub's node key."; };
      caFile = mkOption { type = types.nullOr types.path; default = null; description = "CA that signs the hub's server certificate."; };
      clientCertificate = mkOption { type = types.nullOr types.path; default = null; description = "This site's client certificate (PEM; public, may be in the store)."; };
      recipientPublicKeyFile = mkOption { type = types.nullOr types.path; default = null; description = "The hub's envelope public key (PEM, printed by `lxgate keys hub-recipient` on the hub; public, may be in the store)."; };
      requestTimeoutSeconds = mkOption { type = types.nullOr types.ints.positive; default = null; description = "Seconds one request to the hub may wait for its next bytes ([hub] request_timeout_seconds; null: lxgate's default, 21600, as lx-annotate). LX_ANNOTATE_HUB_EXPORT_REQUEST_TIMEOUT_SECONDS in services.lxgate.environment wins."; };
      maxRetries = mkOption { type = types.nullOr types.ints.unsigned; default = null; description = "Attempts ending in a retryable failure (no answer, 5xx, a redirect) before an export is failed for good with its last reason, until `lxgate hub-export retry` ([hub] max_retries; null: lxgate's default, 5, as lx-annotate). LX_ANNOTATE_HUB_EXPORT_MAX_RETRIES in services.lxgate.environment wins."; };
    };
  };

  config = mkIf cfg.enable {
    assertions = [
      {
        assertion = cfg.hub.transferApi.enable -> cfg.hub.transferApi.clientCaFile != null && cfg.nginx.enable;
        message = "services.lxgate.hub.transferApi.enable requires mTLS: set services.lxgate.hub.transferApi.clientCaFile to the CA that signs site client certificates and keep services.lxgate.nginx.enable = true.";
      }
      {
        assertion = (cfg.hub.transferApi.enable || cfg.hub.transferApi.nodeKey != null) -> cfg.role == "central_hub";
        message = "services.lxgate.hub.transferApi (enable, nodeKey) only makes sense on a hub: set services.lxgate.role = \"central_hub\" or leave the transfer API's options unset.";
      }
      {
        assertion = cfg.hub.export.enable -> cfg.role == "site_node";
        message = "services.lxgate.hub.export.enable sends this host's media to a hub: set services.lxgate.role = \"site_node\" or disable the export.";
      }
      {
        assertion = cfg.hub.export.enable -> lib.all (v: v != null) [ cfg.hub.export.url cfg.hub.export.nodeKey cfg.hub.export.targetNodeKey cfg.hub.export.caFile cfg.hub.export.clientCertificate cfg.hub.export.recipientPublicKeyFile ];
        message = "services.lxgate.hub.export needs url, nodeKey, targetNodeKey, caFile, clientCertificate and recipientPublicKeyFile.";
      }
      {
        assertion = cfg.hub.export.enable && cfg.hub.export.url != null -> lib.hasPrefix "https://" cfg.hub.export.url;
        message = "services.lxgate.hub.export.url must start with https:// (it carries patient media and the node secret).";
      }
      {
        assertion = cfg.role == "central_hub" -> (cfg.database.createLocally || (cfg.settings.database.url or null) != null);
        message = "services.lxgate.role = \"central_hub\" needs a database: set services.lxgate.database.createLocally = true or services.lxgate.settings.database.url.";
      }
      {
        assertion = cfg.masterKey.mode == "0640" && cfg.masterKey.owner == "root" && cfg.masterKey.group == cfg.keysGroup;
        message = "services.lxgate.masterKey must be 0640 root:${cfg.keysGroup} (it is ${cfg.masterKey.mode} ${cfg.masterKey.owner}:${cfg.masterKey.group}): the service reads the key through ${cfg.keysGroup}, so 0400 root:root locks it out. Set masterKey.mode = \"0640\", owner = \"root\", group = \"${cfg.keysGroup}\".";
      }
      {
        assertion = cfg.backup.enable -> cfg.backup.repository != null && cfg.backup.passwordFile != null;
        message = "services.lxgate.backup needs a repository and a passwordFile: set services.lxgate.backup.repository (a path, sftp:, rest:, s3:, ...) and services.lxgate.backup.passwordFile (a root-only file outside the Nix store).";
      }
      {
        assertion = cfg.backup.enable -> lib.all (f: f == null || !lib.hasPrefix builtins.storeDir f) [ cfg.backup.passwordFile cfg.backup.environmentFile ];
        message = "services.lxgate.backup.passwordFile and environmentFile must not be in the Nix store (it is world-readable): point them at root-only files, e.g. under /run/keys or /etc/lxgate/credentials.";
      }
      {
        assertion = unknownEnv == [ ];
        message = "services.lxgate.environment: ${lib.concatStringsSep ", " unknownEnv} is not a variable lxgate reads; the names it reads are ${lib.concatStringsSep ", " contractEnv}.";
      }
      {
        assertion = cfg.nginx.enable -> cfg.nginx.sslCertificate != null && cfg.nginx.sslCertificateKey != null;
        message = "services.lxgate.nginx needs TLS: set services.lxgate.nginx.sslCertificate and sslCertificateKey (or nginx.enable = false).";
      }
    ];

    users.users.${cfg.user} = {
      isSystemUser = true;
      group = cfg.group;
      extraGroups = [ cfg.keysGroup ];
      home = cfg.stateDir;
    };
    users.groups.${cfg.group} = { };
    users.groups.${cfg.keysGroup} = { };
    users.users.nginx = mkIf cfg.nginx.enable { extraGroups = [ cfg.group ]; };

    environment.etc."lxgate/config.toml".source = checkedConfig;

    systemd.tmpfiles.settings.lxgate = lib.listToAttrs (map
      (r: lib.nameValuePair r.path { d = { inherit (r) mode user group; }; })
      rendered.tmpfilesRules);

    systemd.services = lib.mkMerge [
      (lib.mapAttrs'
        (n: u: lib.nameValuePair (lib.removeSuffix ".service" n) (unitBase u // {
          serviceConfig = u.Service // lib.optionalAttrs (credentials != [ ] && !(lib.hasPrefix "lxgate-keys" n)) {
            LoadCredential = lib.toList (u.Service.LoadCredential or [ ]) ++ credentials;
          } // lib.optionalAttrs (n == "lxgate-migrate.service" && cfg.deployGate.enable) {
            # The gate lifts the ingest pause once smoke has passed.
            ExecStart = "${u.Service.ExecStart} --hold-ingest-pause";
          };
          restartTriggers = [ checkedConfig ];
          # The snapshot before a migration: pg_dump of the server's own version.
          path = lib.optional (n == "lxgate-migrate.service") (config.services.postgresql.package or pkgs.postgresql);
        } // lib.optionalAttrs (cfg.environment != { }) { inherit (cfg) environment; }))
        (byType ".service")
      // lib.optionalAttrs cfg.backup.enable {
        # services.restic.backups.lxgate's unit: pg_dump for the prepare step, and the
        # password file handed over as a credential (it stays root-only).
        ${resticUnit} = {
          path = [ (config.services.postgresql.package or pkgs.postgresql) ];
          serviceConfig.LoadCredential = [ "restic-password:${cfg.backup.passwordFile}" ];
        };
      }
      // lib.optionalAttrs cfg.deployGate.enable {
        # NixOS-only, so not in nix/contract.toml: Debian hosts gate with `lxgate deploy`.
        lxgate-deploy-gate = {
          description = "lxgate: smoke after a switch; roll back to the previous generation if it fails";
          after = [ "lxgate.service" "lxgate-watcher.service" "nginx.service" "postgresql.service" ];
          wants = [ "lxgate.service" ];
          wantedBy = [ "multi-user.target" ];
          # Runs again on every switch that changes lxgate or its settings.
          restartTriggers = [ cfg.package checkedConfig ];
          path = [ config.nix.package (config.services.postgresql.package or pkgs.postgresql) ];
          serviceConfig = {
            Type = "oneshot";
            RemainAfterExit = true;
            ExecStart = lib.concatStringsSep " " ([ "${cfg.package}/bin/lxgate" "--config" "/etc/lxgate/config.toml" "deploy" "gate" "--smoke-port" (toString cfg.deployGate.smokePort) ]
              ++ lib.optionals (cfg.deployGate.smokeCa != null) [ "--smoke-ca" "${cfg.deployGate.smokeCa}" ]);
          };
        };
      })
      (mkIf (recipientNames != [ ]) {
        lxgate = {
          serviceConfig.LoadCredential = lib.zipListsWith (name: file: "${name}:${file}") recipientNames cfg.hub.transferApi.recipientKeyFiles;
          environment.ENDOREG_HUB_TRANSFER_RECIPIENT_PRIVATE_KEY_FILES = lib.concatMapStringsSep "," (name: "%d/${name}") recipientNames;
        };
      })
    ];

    systemd.paths = lib.mapAttrs'
      (n: u: lib.nameValuePair (lib.removeSuffix ".path" n) (unitBase u // { pathConfig = u.Path; }))
      (byType ".path");

    systemd.timers = lib.mapAttrs'
      (n: u: lib.nameValuePair (lib.removeSuffix ".timer" n) (unitBase u // { timerConfig = u.Timer; }))
      (byType ".timer");

    services.postgresql = mkIf cfg.database.createLocally {
      enable = true;
      ensureDatabases = [ cfg.user ];
      ensureUsers = [{ name = cfg.user; ensureDBOwnership = true; }];
    };

    services.restic.backups.lxgate = mkIf cfg.backup.enable {
      inherit (cfg.backup) repository initialize environmentFile timerConfig;
      # As the service account: it owns what is backed up, and PostgreSQL's peer
      # authentication lets it dump.
      user = cfg.user;
      # The password file itself stays root-only: systemd hands it over as a credential.
      passwordFile = "/run/credentials/${resticUnit}.service/restic-password";
      paths = backupPaths;
      exclude = backupExcludes;
      extraBackupArgs = [ "--tag lxgate" ];
      pruneOpts = lib.optionals (keepOpts != [ ]) ([ "--tag lxgate" ] ++ keepOpts);
      backupPrepareCommand = "${cfg.package}/bin/lxgate --config /etc/lxgate/config.toml backup prepare";
    };

    services.nginx = mkIf cfg.nginx.enable {
      enable = true;
      # The app with idle connections kept open (the contract's [nginx.upstream]); the
      # proxied locations name it in proxy_pass.
      upstreams.${rendered.nginxUpstream.name} = {
        servers.${rendered.nginxUpstream.server} = { };
        inherit (rendered.nginxUpstream) extraConfig;
      };
      virtualHosts.${cfg.nginx.hostName} = {
        onlySSL = true;
        sslCertificate = cfg.nginx.sslCertificate;
        sslCertificateKey = cfg.nginx.sslCertificateKey;
        # The contract's server prologue (body limits, client timeouts, the hub's mTLS)
        # and its locations; listen and certificates come from the options above.
        extraConfig = rendered.nginxServerConfig;
        locations = lib.mapAttrs (_: body: { extraConfig = body; }) rendered.nginxLocations;
      };
    };
  };
}
