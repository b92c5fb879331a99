# Evaluates modules/lxgate.nix with nixpkgs' lib.evalModules against small stub
# declarations of the nixpkgs options it sets (no nixpkgs tree needed: only lib/).
#   nix-instantiate --eval --strict --json tests/nix/module-eval.nix \
#     --arg lib 'import /path/to/nixpkgs/lib' --argstr case standalone
{ lib, case ? "standalone", settingsFile ? null }:
let
  inherit (lib) mkOption types;
  anything = mkOption { type = types.attrsOf types.anything; default = { }; };
  stubs = { ... }: {
    options = {
      systemd.services = anything;
      systemd.paths = anything;
      systemd.timers = anything;
      systemd.tmpfiles.settings = anything;
      services.nginx = mkOption { type = types.submodule { freeformType = types.attrsOf types.anything; }; default = { }; };
      services.postgresql = mkOption { type = types.submodule { freeformType = types.attrsOf types.anything; }; default = { }; };
      services.restic.backups = anything;
      users.users = anything;
      users.groups = anything;
      environment.etc = anything;
      assertions = mkOption { type = types.listOf types.unspecified; default = [ ]; };
      warnings = mkOption { type = types.listOf types.str; default = [ ]; };
    };
  };
  # Just enough of pkgs: the package, formats.toml and runCommand.
  pkgs = {
    lxgate = { outPath = "/nix/store/0000000000000000000000000000000-lxgate"; meta = { }; name = "lxgate"; type = "derivation"; };
    # No store writes under --eval: the "file" carries its settings as JSON, and the
    # checked copy is its script, so a case can read back what the module wrote.
    formats.toml = { }: {
      type = types.attrsOf types.anything;
      generate = name: value: "json:${builtins.toJSON value}";
    };
    runCommand = name: _: script: script;
    postgresql = { outPath = "/nix/store/0000000000000000000000000000000-postgresql"; name = "postgresql"; type = "derivation"; };
  };
  fakeTls = { sslCertificate = "/etc/lxgate/tls/server.crt"; sslCertificateKey = "/etc/lxgate/tls/server.key"; };
  cases = {
    standalone = { services.lxgate = { enable = true; nginx = fakeTls // { hostName = "localhost"; }; }; };
    standalone-everything = { services.lxgate = { enable = true; nginx = fakeTls // { hostName = "localhost"; }; sapImport.enable = true; recovery = { enable = true; source = "/srv/old-data"; }; settings.server.listen = "unix:/run/lxgate/lxgate.sock"; }; };
    site_node = { services.lxgate = { enable = true; role = "site_node"; stateDir = "/srv/lx"; dataDir = "/mnt/crypt/lx"; user = "lx"; group = "lx"; keysGroup = "lxkeys"; nginx = fakeTls // { hostName = "localhost"; }; settings.watcher.memory_max = "1G"; }; };
    site_node-export = { services.lxgate = { enable = true; role = "site_node"; nginx = fakeTls // { hostName = "localhost"; }; hub.export = { enable = true; url = "https://hub.example.org"; nodeKey = "site-a"; targetNodeKey = "hub-berlin"; caFile = "/etc/lxgate/hub-ca.pem"; clientCertificate = "/etc/lxgate/site.pem"; recipientPublicKeyFile = "/etc/lxgate/hub-recipient.pub.pem"; requestTimeoutSeconds = 600; maxRetries = 3; }; }; };
    central_hub = { services.lxgate = { enable = true; role = "central_hub"; watcher.enable = false; nginx = fakeTls // { hostName = "hub.example.org"; }; hub.transferApi = { enable = true; clientCaFile = "/etc/lxgate/ca.pem"; nodeKey = "hub-berlin"; }; }; };
    standalone-backup = { services.lxgate = { enable = true; nginx = fakeTls // { hostName = "localhost"; }; dataDir = "/mnt/crypt/lx"; backup = { enable = true; repository = "sftp:backup@backup.example.org:/srv/restic/site-a"; passwordFile = "/etc/lxgate/credentials/restic-password"; environmentFile = "/etc/lxgate/credentials/restic-env"; keep.monthly = 0; }; }; };
    # Each of these must fail with its assertion.
    bad-backup-without-password = { services.lxgate = { enable = true; nginx = fakeTls; backup = { enable = true; repository = "/var/backups/lxgate"; }; }; };
    bad-backup-password-in-store = { services.lxgate = { enable = true; nginx = fakeTls; backup = { enable = true; repository = "/var/backups/lxgate"; passwordFile = "/nix/store/0000000000000000000000000000000-pw"; }; }; };
    bad-transfer-without-mtls = { services.lxgate = { enable = true; role = "central_hub"; nginx = fakeTls; hub.transferApi.enable = true; }; };
    bad-hub-without-database = { services.lxgate = { enable = true; role = "central_hub"; nginx = fakeTls; database.createLocally = false; }; };
    bad-key-0400-root = { services.lxgate = { enable = true; nginx = fakeTls; masterKey = { mode = "0400"; group = "root"; }; }; };
    bad-nginx-without-tls = { services.lxgate = { enable = true; }; };
    bad-export-over-http = { services.lxgate = { enable = true; role = "site_node"; nginx = fakeTls; hub.export = { enable = true; url = "http://hub"; nodeKey = "s"; targetNodeKey = "h"; caFile = "/ca"; clientCertificate = "/c"; recipientPublicKeyFile = "/r.pem"; }; }; };
    bad-unknown-env = { services.lxgate = { enable = true; nginx = fakeTls; environment.WATCHER_STABLE_AFTER = "1"; }; };
    bad-node-key-not-a-hub = { services.lxgate = { enable = true; role = "site_node"; nginx = fakeTls; hub.transferApi.nodeKey = "hub-berlin"; }; };
    bad-export-not-a-site = { services.lxgate = { enable = true; nginx = fakeTls; hub.export = { enable = true; url = "https://hub"; nodeKey = "s"; targetNodeKey = "h"; caFile = "/ca"; clientCertificate = "/c"; recipientPublicKeyFile = "/r.pem"; }; }; };
  };
  eval = lib.evalModules {
    modules = [ stubs ../../modules/lxgate.nix cases.${case} { _module.args.pkgs = pkgs; } ];
  };
  c = eval.config;
  vhost = c.services.nginx.virtualHosts.${lib.head (lib.attrNames c.services.nginx.virtualHosts)};
  failed = map (a: a.message) (lib.filter (a: !a.assertion) c.assertions);
  # Units back to (section, key, value) lines, the way systemd will see them.
  line = section: k: v:
    if lib.isList v then map (x: "${section}|${k}|${toString x}") v
    else if lib.isBool v then [ "${section}|${k}|${if v then "yes" else "no"}" ]
    else [ "${section}|${k}|${toString v}" ];
  sectionLines = section: attrs: lib.concatLists (lib.mapAttrsToList (line section) attrs);
  unitLines = u: extra:
    [ "Unit|Description|${u.description}" ]
    ++ sectionLines "Unit" (lib.filterAttrs (k: v: v != [ ]) { After = u.after; Before = u.before; Requires = u.requires; Wants = u.wants or [ ]; })
    ++ sectionLines "Unit" u.unitConfig
    ++ extra
    ++ (if u.wantedBy != [ ] then sectionLines "Install" { WantedBy = u.wantedBy; } else [ ]);
in
if failed != [ ] then { inherit failed; } else {
  failed = [ ];
  tmpfiles = lib.mapAttrsToList (path: r: "d ${path} ${r.d.mode} ${r.d.user} ${r.d.group} - -") c.systemd.tmpfiles.settings.lxgate;
  units =
    lib.mapAttrs' (n: u: lib.nameValuePair "${n}.service" (lib.sort (a: b: a < b) (unitLines u (sectionLines "Service" u.serviceConfig)))) (lib.filterAttrs (n: _: lib.hasPrefix "lxgate" n) c.systemd.services)
    // lib.mapAttrs' (n: u: lib.nameValuePair "${n}.path" (lib.sort (a: b: a < b) (unitLines u (sectionLines "Path" u.pathConfig)))) c.systemd.paths
    // lib.mapAttrs' (n: u: lib.nameValuePair "${n}.timer" (lib.sort (a: b: a < b) (unitLines u (sectionLines "Timer" u.timerConfig)))) c.systemd.timers;
  nginxLocations = lib.attrNames vhost.locations;
  nginx = {
    upstreams = lib.mapAttrs (_: u: { servers = lib.attrNames u.servers; lines = lib.filter (l: l != "") (lib.splitString "\n" u.extraConfig); }) c.services.nginx.upstreams;
    extraConfig = lib.filter (l: l != "") (lib.splitString "\n" vhost.extraConfig);
    locations = lib.mapAttrs (_: l: l.extraConfig) vhost.locations;
  };
  postgres = c.services.postgresql.ensureUsers;
  restic = c.services.restic.backups;
  # The settings file the module writes, as the config check at build time reads it.
  settings = builtins.fromJSON (lib.head (builtins.match ".* --config json:(.*) config check >/dev/null.*" c.environment.etc."lxgate/config.toml".source));
  resticUnit = c.systemd.services.restic-backups-lxgate or null;
}
