{
  description = "ukb: declarative, content-addressed builds of unikernels, with reproducible kernels, initrds and OCI images";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-24.11";

  outputs = { self, nixpkgs }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAll = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
      # What builds and the tests call on the host: the sandbox, the boot,
      # the OCI checkers and servers the tests start on 127.0.0.1.
      runtimeTools = pkgs: with pkgs; [
        bubblewrap
        qemu
        skopeo
        umoci
        oci-image-tool
        docker-distribution
        nginx
        libarchive
        cpio
        curl
        xz
        zstd
        gnumake
        gcc
        flex
        bison
        python3
        unzip
        zip
        patch
        # The report's test renders it in headless Chromium.
        chromium
      ];
    in
    {
      packages = forAll (pkgs: rec {
        ukb = pkgs.buildNpmPackage {
          pname = "ukb";
          version = "0.1.0";
          src = ./.;
          nodejs = pkgs.nodejs_20;
          # The dependencies as package-lock.json pins them, each by its own integrity hash:
          # no npmDepsHash to keep in step with the lock file.
          npmDeps = pkgs.importNpmLock { npmRoot = ./.; };
          npmConfigHook = pkgs.importNpmLock.npmConfigHook;
          nativeBuildInputs = [ pkgs.python3 pkgs.makeWrapper ];
          npmBuildScript = "build";
          postInstall = ''
            wrapProgram $out/bin/ukb --prefix PATH : ${pkgs.lib.makeBinPath [ pkgs.nodejs_20 pkgs.bubblewrap pkgs.python3 ]}
          '';
          meta.mainProgram = "ukb";
        };
        default = ukb;
      });

      devShells = forAll (pkgs: {
        default = pkgs.mkShell {
          packages = [ pkgs.nodejs_20 pkgs.python3 ] ++ runtimeTools pkgs;
          shellHook = ''
            export UKB_STORE=''${UKB_STORE:-$PWD/cache}
          '';
        };
      });
    };
}
