package Test::Nginx::Util;

# Server side of the fallback Test::Nginx runner: global settings, the
# server root and nginx.conf it generates, nginx process control and the
# per-block lifecycle.  Client requests and assertions live in
# Test::Nginx::Socket, which plugs in through $RunTestHelper/$CheckErrorLog.
#
# This is a small re-implementation of openresty/test-nginx for machines
# without CPAN; it follows the documented behaviour of the real module for
# the features it supports and bails out on the ones it does not.

use strict;
use warnings;

use Exporter 'import';
use Carp qw(croak);
use File::Find ();
use File::Path qw(make_path remove_tree);
use File::Spec ();
use File::Temp ();
use IO::Socket::INET ();
use List::Util qw(min shuffle);
use POSIX qw(SIGQUIT SIGTERM SIGKILL WNOHANG);
use Scalar::Util qw(looks_like_number);
use Test::LongString ();
use Test::More ();
use Time::HiRes qw(sleep);

for my $mode (qw(USE_STAP USE_RR CHECK_LEAK BENCHMARK USE_HTTP2
                 USE_HTTP3 NO_NGINX_MANAGER IGNORE_MISSING_DIRECTIVES)) {
    die "TEST_NGINX_$mode is not supported by the fallback Test::Nginx "
        . "runner (t/lib/fallback); install Test::Nginx from CPAN\n"
        if $ENV{"TEST_NGINX_$mode"};
}

# Settings, with the same defaults and environment overrides as the real one.
our $NginxBinary       = $ENV{TEST_NGINX_BINARY} || 'nginx';
our $LoadModules       = $ENV{TEST_NGINX_LOAD_MODULES};
our $Timeout           = $ENV{TEST_NGINX_TIMEOUT} || 3;
our $LogLevel          = $ENV{TEST_NGINX_LOG_LEVEL} || 'debug';
our $MasterProcessEnabled = $ENV{TEST_NGINX_MASTER_PROCESS} || 'off';
our $UseValgrind       = $ENV{TEST_NGINX_USE_VALGRIND};
our $ValgrindExitOnFirstErr = $ENV{TEST_NGINX_VALGRIND_EXIT_ON_FIRST_ERR};
# Under valgrind nginx runs in the foreground, a child of this process.
our $DaemonEnabled     = $UseValgrind ? 'off' : 'on';
our $Workers           = 1;
our $WorkerConnections = 64;
our $WorkerUser        = $ENV{TEST_NGINX_WORKER_USER};
our $EventType         = $ENV{TEST_NGINX_EVENT_TYPE};
our $ServerAddr        = '127.0.0.1';
our $ServerName        = 'localhost';
our $ServerPort        = $ENV{TEST_NGINX_SERVER_PORT} || $ENV{TEST_NGINX_PORT} || 1984;
our $ServerPortForClient = $ENV{TEST_NGINX_CLIENT_PORT} || $ServerPort;
our $TestNginxSleep    = $ENV{TEST_NGINX_SLEEP} || 0.015;
our $ForceRestartOnTest = $ENV{TEST_NGINX_FORCE_RESTART_ON_TEST} // 1;
our $UseHup            = $ENV{TEST_NGINX_USE_HUP};
our $NoShuffle         = $ENV{TEST_NGINX_NO_SHUFFLE} || 0;
our $CheckAccumErrLog  = $ENV{TEST_NGINX_CHECK_ACCUM_ERR_LOG};
our $Randomize         = $ENV{TEST_NGINX_RANDOMIZE};
our $Verbose           = $ENV{TEST_NGINX_VERBOSE};
our $RepeatEach        = 1;
our $NoRootLocation    = 0;
our $NoLongString;
our $ConfigPreamble    = '';
our @EnvToNginx;
our (@BlockPreprocessors, @CleanupHandlers, @TestCleanupHandlers);

# Hooks filled in by Test::Nginx::Socket.
our $RunTestHelper;     # ($block, $repeated_req_idx): send requests, check
our $CheckErrorLog;     # ($block, $repeated_req_idx): error_log checks

# Run state.
our ($NginxVersion, $NginxV, $PrevConfig, $ConfigVersion, $ErrLogFilePos);
our $FirstTime = 1;
our %RandPorts;         # TEST_NGINX_RAND_PORT_N values of the current block
our $ChildPid;          # nginx under valgrind, run in the foreground
our $LastBlockName = 'END';
our $AnnouncedName = '';    # block name last written to stderr, valgrind mode

# Valgrind mode: the stderr of nginx under valgrind (valgrind's reports) goes
# to this file; after each block, what is new is copied to our stderr, where
# the real runner leaves it, and a block with reports fails.
our ($ValgrindLog, $ValgrindLogPos) = (undef, 0);
if ($UseValgrind) {
    (undef, $ValgrindLog) = File::Temp::tempfile('ngx-valgrind-XXXXXX',
                                                 TMPDIR => 1, UNLINK => 1);
}

if ($Randomize) {
    $ServerPort = gen_rand_port(1000)
        // die "Cannot find an available listening port number\n";
    $ServerPortForClient = $ServerPort;
}

our $ServRoot = $Randomize
    ? File::Spec->rel2abs("t/servroot_$ServerPort")
    : ($ENV{TEST_NGINX_SERVROOT} || File::Spec->rel2abs('t/servroot'));
$ENV{TEST_NGINX_SERVER_ROOT} = $ServRoot;
our $LogDir     = "$ServRoot/logs";
our $ErrLogFile = "$LogDir/error.log";
our $AccLogFile = "$LogDir/access.log";
our $HtmlDir    = "$ServRoot/html";
our $ConfDir    = "$ServRoot/conf";
our $ConfFile   = "$ConfDir/nginx.conf";
our $PidFile    = "$LogDir/nginx.pid";
our $CacheDir   = "$ServRoot/cache";

our @EXPORT = qw(
    run_tests bail_out is_str expand_env_in_text error_log_data parse_time
    repeat_each workers worker_connections master_on master_off
    master_process_enabled use_hup no_shuffle log_level no_long_string
    no_root_location timeout env_to_nginx server_port server_port_for_client
    server_addr server_name server_root html_dir check_accum_error_log
    config_preamble add_block_preprocessor add_cleanup_handler
    add_test_cleanup_handler sleep_time verbose
    $ServerPort $ServerPortForClient $ServerAddr $ServerName $ServRoot
    $NoLongString $RepeatEach $NginxVersion $RunTestHelper $CheckErrorLog
);

# Sections of the real Test::Nginx that this runner does not implement.  A
# test silently ignoring them could pass for the wrong reason, so refuse.
my @Unsupported = qw(
    http2 http3 curl curl_protocol curl_options curl_error
    response_body_filters response_body_json_sort charset
    grep_error_log grep_error_log_out access_log no_access_log
    shutdown_error_log no_shutdown_error_log stap stap_out stap_out_like
    stap_out_unlike udp_listen udp_reply udp_reply_delay udp_query
    tcp_listen tcp_reply tcp_reply_delay tcp_query tcp_query_len tcp_no_close
    tcp_shutdown skip_nginx2 skip_openssl skip_slave todo todo_nginx
    write_resp_body_file quic_max_idle_timeout
);

#--- exported settings ----------------------------------------------------

sub repeat_each (@)        { $RepeatEach = shift if @_; $RepeatEach }
sub workers (@)            { $Workers = shift if @_; $Workers }
sub worker_connections (@) { $WorkerConnections = shift if @_; $WorkerConnections }
sub log_level (@)          { $LogLevel = shift if @_; $LogLevel }
sub timeout (@)            { $Timeout = shift if @_; $Timeout }
sub server_port (@)        { $ServerPort = shift if @_; $ServerPort }
sub server_port_for_client (@) { $ServerPortForClient = shift if @_; $ServerPortForClient }
sub server_addr (@)        { $ServerAddr = shift if @_; $ServerAddr }
sub server_name (@)        { $ServerName = shift if @_; $ServerName }
sub master_on ()           { $MasterProcessEnabled = 'on' }
sub master_off ()          { $MasterProcessEnabled = 'off' }
sub master_process_enabled (@) {
    $MasterProcessEnabled = shift() ? 'on' : 'off' if @_;
    $MasterProcessEnabled;
}
sub use_hup ()             { $UseHup = 1 }
sub no_shuffle ()          { $NoShuffle = 1 }
sub no_long_string ()      { $NoLongString = 1 }
sub no_root_location ()    { $NoRootLocation = 1 }
sub check_accum_error_log () { $CheckAccumErrLog = 1 }
sub config_preamble ($)    { $ConfigPreamble = shift }
sub server_root ()         { $ServRoot }
sub html_dir ()            { $HtmlDir }
sub sleep_time             { $TestNginxSleep }
sub verbose                { $Verbose }
sub add_block_preprocessor (&) { unshift @BlockPreprocessors, shift }
sub add_cleanup_handler ($)    { unshift @CleanupHandlers, shift }
sub add_test_cleanup_handler ($) { unshift @TestCleanupHandlers, shift }

sub env_to_nginx (@) {
    croak "env_to_nginx: no arguments specified" unless @_;
    for my $v (@_) {
        croak "env_to_nginx: bad argument value: $v\n"
            if $v !~ /^[A-Za-z_]/ || $v =~ /\n/;
        push @EnvToNginx, $v;
    }
}

sub bail_out (@) {
    cleanup();
    Test::More::BAIL_OUT(@_);
}

sub is_str (@) {
    my ($got, $expected, $desc) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    return Test::More::like($got, $expected, $desc) if ref $expected eq 'Regexp';
    return Test::More::is($got, $expected, $desc) if $NoLongString;
    return Test::LongString::is_string($got, $expected, $desc);
}

#--- helpers ----------------------------------------------------------------

# "1.5", "500ms", "2s" => seconds
sub parse_time ($) {
    my $t = shift;
    return $t unless defined $t;
    if ($t =~ s/([^_a-zA-Z])ms$/$1/) {
        $t /= 1000;
    } else {
        $t =~ s/([^_a-zA-Z])s$/$1/;
    }
    return $t;
}

sub is_running { my $pid = shift; return $pid && kill 0, $pid }

sub gen_rand_port {
    my ($tries, $used) = @_;
    for (1 .. $tries) {
        my $port = 1988 + int rand 63547;
        next if $used && $used->{$port};
        # A port we can bind right now is (very likely) free for nginx too.
        my $sock = IO::Socket::INET->new(LocalAddr => $ServerAddr,
            LocalPort => $port, Proto => 'tcp', Listen => 5, Reuse => 1)
            or next;
        close $sock;
        return $port;
    }
    return undef;
}

# $TEST_NGINX_XXX => $ENV{TEST_NGINX_XXX}; TEST_NGINX_RAND_PORT_N get a free
# port, stable within one block.
sub expand_env_in_text ($$;$) {
    my ($text, $name) = @_;
    return $text unless defined $text;
    $text =~ s{\$(TEST_NGINX_[_A-Z0-9]+)}{
        my $var = $1;
        if ($var =~ /^TEST_NGINX_RAND_PORT_[0-9]+$/) {
            $RandPorts{$var} //= gen_rand_port(1000,
                    { $ServerPort => 1, map { $_ => 1 } values %RandPorts })
                // bail_out("$name - Cannot find an available listening port number for $var.\n");
        } else {
            bail_out("$name - No environment $var defined.\n")
                unless defined $ENV{$var};
            $ENV{$var};
        }
    }eg;
    return $text;
}

sub canon_version { sprintf "%d.%03d%03d", @_[0 .. 2] }

sub nginx_version {
    $NginxV = `'$NginxBinary' -V 2>&1`;
    bail_out("Failed to get the version of the Nginx in PATH: " . ($NginxV // ''))
        if !defined $NginxV || $? != 0;
    return canon_version($1, $2, $3) if $NginxV =~ m{\w+/(\d+)\.(\d+)\.(\d+)};
    bail_out("Failed to parse the output of \"nginx -V\": $NginxV\n");
}

sub read_pid_file {
    my $name = shift;
    open my $in, '<', $PidFile
        or bail_out("$name - Failed to open the pid file $PidFile for reading: $!");
    my $pid = do { local $/; <$in> } // '';
    close $in;
    chomp $pid;
    return $pid;
}

# Error log lines written since the last call in this block (or since the
# block started when check_accum_error_log is on).
sub error_log_data () {
    # give nginx a moment to log things like the log phase of a request
    sleep $TestNginxSleep * 3;
    open my $in, '<', $ErrLogFile or return undef;
    seek $in, $ErrLogFilePos, 0 if !$CheckAccumErrLog && $ErrLogFilePos;
    my @lines = <$in>;
    $ErrLogFilePos = tell $in unless $CheckAccumErrLog;
    close $in;
    return \@lines;
}

#--- server root and config -------------------------------------------------

sub setup_server_root {
    my $first_time = shift;
    if (-d $ServRoot) {
        # Only remove what we create, so a mistaken TEST_NGINX_SERVROOT does
        # not wipe user data (the final rmdir fails on anything else).
        remove_tree($ConfDir, glob("$ServRoot/*_cache"), glob("$ServRoot/*_temp"));
        if ($UseHup) {
            # nginx keeps running across reloads: keep its directories, pid
            # file and sockets, drop everything else (logs are reopened).
            File::Find::find({ bydepth => 1, no_chdir => 1, wanted => sub {
                return if -d $_;
                return if !$first_time && /(?:\bnginx\.pid|\.sock|\.crt|\.key)$/;
                unlink $_ or warn "Failed to remove $_: $!\n";
            }}, $ServRoot);
        } else {
            remove_tree($CacheDir, $HtmlDir, $LogDir);
            rmdir $ServRoot or bail_out("Can't remove $ServRoot (not empty?): $!");
        }
    }
    for my $dir ($ServRoot, $LogDir, $HtmlDir) {
        -d $dir or mkdir $dir or bail_out("Failed to do mkdir $dir\n");
    }
    write_file("$HtmlDir/index.html",
        '<html><head><title>It works!</title></head><body>It works!</body></html>');
    mkdir $ConfDir or bail_out("Failed to do mkdir $ConfDir\n");
}

sub write_file {
    my ($path, $data) = @_;
    open my $out, '>', $path or bail_out("Can't open $path for writing: $!\n");
    binmode $out;
    print $out $data;
    close $out;
}

# --- user_files: ">>> name [touch -t date]" followed by the body, or an
# array of [name, body, date] via eval.  Relative names go under html/.
sub write_user_files {
    my $block = shift;
    my $name = $block->name;
    my $files = $block->user_files or return;
    if (!ref $files) {
        my @list;
        for my $line (split /^/, $files) {
            if ($line =~ />>> (\S+)(?:\s+(.+))?/) {
                push @list, [$1, undef, $2];
            } elsif (@list) {
                $list[-1][1] .= $line;
            }
        }
        $files = \@list;
    } elsif (ref $files ne 'ARRAY') {
        bail_out("$name - wrong value type: ", ref $files,
                 ", only scalar or ARRAY are accepted");
    }
    for my $file (@$files) {
        my ($fname, $body, $date) = @$file;
        my $path = $fname =~ m{^/} ? $fname : "$HtmlDir/$fname";
        if ($path =~ m{(.*)/} && !-d $1) {
            make_path($1) or bail_out("$name - Cannot create directory ", $1);
        }
        write_file($path, expand_env_in_text($body // '', $name));
        if ($date) {
            system("TZ=GMT touch -t '$date' '$HtmlDir/$fname'") == 0
                or bail_out("$name - Failed to set the mtime of $fname\n");
        }
    }
}

sub write_config_file {
    my ($block, $config) = @_;
    my $name = $block->name;

    master_on() if $UseHup;    # reloads need a master process

    my $http_config = expand_env_in_text($block->http_config, $name) // '';
    my $main_config = $block->main_config // '';
    if ($LoadModules) {
        my @modules = map { "load_module $_;" } grep { $_ } split /\s+/, $LoadModules;
        $main_config = join ' ', @modules, $main_config if @modules;
    }
    $main_config = expand_env_in_text($main_config, $name);
    my $post_main_config = expand_env_in_text($block->post_main_config, $name) // '';
    my $err_log_file = expand_env_in_text($block->error_log_file || $ErrLogFile, $name);
    my $server_name = $block->server_name // $ServerName;
    $config //= '';

    # Keep temp files inside the server root (same rules as the real one,
    # which only checks --without-* for fastcgi/scgi/uwsgi).
    my %temp = map { $_ => "${_}_temp_path $ServRoot/${_}_temp;" }
               qw(client_body proxy fastcgi scgi uwsgi);
    for my $mod (qw(fastcgi scgi uwsgi)) {
        $temp{$mod} = '' if $NginxV =~ /--without-http_${mod}_module/;
    }
    for my $mod (qw(client_body proxy)) {
        $temp{$mod} = '' if $http_config =~ /\b${mod}_temp_path\b/;
    }
    my $temp_paths = join ' ', @temp{qw(client_body proxy fastcgi scgi uwsgi)};

    my $env = '';
    for my $v (@EnvToNginx) {
        $env .= $v =~ /\s/ ? "env '$v';\n" : "env $v;\n";
    }

    # The layout, comment lines included, matches the real runner's line
    # for line, so "nginx.conf:LINE" in error messages is the same.
    my $conf = <<"_EOC_";
worker_processes  $Workers;
daemon $DaemonEnabled;
master_process $MasterProcessEnabled;
error_log $err_log_file $LogLevel;
pid       $PidFile;
env MOCKEAGAIN_VERBOSE;
env MOCKEAGAIN;
env MOCKEAGAIN_WRITE_TIMEOUT_PATTERN;
env LD_PRELOAD;
env LD_LIBRARY_PATH;
env DYLD_INSERT_LIBRARIES;
env DYLD_FORCE_FLAT_NAMESPACE;
${env}#env LUA_PATH;
#env LUA_CPATH;

$main_config

http {
    access_log $AccLogFile; $temp_paths
    #access_log off;

    default_type text/plain;
    keepalive_timeout  68000ms;

$http_config
    server {
        listen          $ServerPort;
        #placeholder
        server_name     '$server_name';
        
        client_max_body_size 30M;
        #client_body_buffer_size 4k;

        # Begin preamble config...
$ConfigPreamble
        # End preamble config...

        # Begin test case config...
$config
        # End test case config.

_EOC_

    $conf .= <<"_EOC_" unless $NoRootLocation;
        location / {
            root $HtmlDir;
            index index.html index.htm;
        }
_EOC_
    $conf .= "    }\n";

    # A second virtual server answers /ver with a per-block token, so we can
    # tell when a HUP reload has really taken effect.
    $conf .= <<"_EOC_" if $UseHup;
    server {
        listen          $ServerPort; 
        server_name     'Test-Nginx';

        location = /ver {
            return 200 '$ConfigVersion';
        }
    }


_EOC_

    $conf .= <<"_EOC_";
}

$post_main_config

#timer_resolution 100ms;

events {
    accept_mutex off;

    worker_connections  $WorkerConnections;
_EOC_
    $conf .= "    use $EventType;\n" if $EventType;
    $conf .= "}\nenv ASAN_OPTIONS;\nenv MOCKNOEAGAIN_VERBOSE;\nenv MOCKNOEAGAIN;\n";
    if (defined $WorkerUser) {
        $conf .= "user $WorkerUser;\n";
    } elsif ($> == 0) {
        $conf .= "user root;\n";
    }
    write_file($ConfFile, $conf);
}

# Everything a (re)started or reloaded nginx needs on disk for this block.
sub prepare_server_root {
    my ($block, $config, $first_time) = @_;
    my $name = $block->name;
    setup_server_root($first_time);
    if (defined(my $code = $block->post_setup_server_root)) {
        eval $code;
        bail_out("$name - post_setup_server_root failed: $@") if $@;
    }
    write_user_files($block);
    write_config_file($block, $config);
}

#--- nginx processes ----------------------------------------------------------

# Stop nginx gracefully (QUIT), escalating to KILL after timeout().
sub kill_process {
    my ($pid, $name) = @_;
    kill $ENV{TEST_NGINX_FAST_SHUTDOWN} ? SIGTERM : SIGQUIT, $pid;
    my $left = $Timeout;
    while ($left > 0 && is_running($pid)) {
        waitpid $pid, WNOHANG;
        sleep 0.05;
        $left -= 0.05;
    }
    return unless is_running($pid);
    warn "$name - timeout when waiting for the process $pid to exit\n";
    # a daemonized nginx leads its own process group: take the workers too
    kill SIGKILL, getpgrp($pid) == $pid ? -$pid : $pid;
    for (1 .. 40) {
        waitpid $pid, WNOHANG;
        last unless is_running($pid);
        sleep 0.05;
    }
}

sub nginx_command {
    my $block = shift;
    # -e (early error log) exists since nginx 1.19.5
    my $e = $NginxVersion >= 1.019005 ? "-e '$ErrLogFile' " : '';
    my $cmd = "'$NginxBinary' $e-p '$ServRoot/' -c '$ConfFile' > /dev/null";
    $cmd .= ' 2> /dev/null' if defined $block->suppress_stderr;
    return $cmd;
}

# Runs nginx (which daemonizes), returning its wait status decoded.
sub run_nginx {
    my $cmd = shift;
    warn "command: $cmd\n" if $Verbose;
    system $cmd;
    my $status = $?;
    return ($status, undef, undef, 1) if $status == -1;
    my $code = $status >> 8;
    # killed by a signal, reported either directly or by the shell (128+N)
    my $crashed = ($status & 127) || $code > 128;
    return ($status, $code, $crashed, 0);
}

# must_die: nginx has to fail at startup; check that and the error log.
sub run_must_die {
    my ($block, $must_die) = @_;
    my $name = $block->name;
    my $cmd = nginx_command($block);
    $ErrLogFilePos = 0;
    for my $i (0 .. $RepeatEach - 1) {
        my ($status, $code, $crashed, $exec_failed) = run_nginx($cmd);
        if ($exec_failed) {
            Test::More::fail("$name - failed to execute the nginx command line");
        } elsif ($crashed) {
            Test::More::fail("$name - nginx core dumped");
        } elsif (looks_like_number($must_die)) {
            Test::More::is($must_die, $code, "$name - die with the expected exit code");
        } else {
            Test::More::isnt($status, 0, "$name - die as expected");
        }
        $CheckErrorLog->($block, $i);
        if ($status == 0) {
            warn "WARNING: $name - nginx must die but it does not; killing it (req $i)\n";
            for (1 .. 15) { last if -f $PidFile; sleep $TestNginxSleep }
            kill_process(read_pid_file($name), $name);
        }
    }
}

sub start_nginx {
    my $block = shift;
    my $name = $block->name;
    bail_out("$name - Cannot find the nginx executable $NginxBinary")
        unless can_run($NginxBinary);
    my $cmd = nginx_command($block);
    $ErrLogFilePos = 0;
    if ($UseValgrind) {
        start_nginx_under_valgrind($name, $cmd);
        return;
    }
    # Retry for a while: the previous nginx may still hold the port.
    my ($tries, $waited) = (0, 0);
    while (1) {
        my ($status) = run_nginx($cmd);
        last if $status == 0;
        my $delay = min(0.1 * ++$tries, 1);
        sleep $delay;
        $waited += $delay;
        bail_out("$name - Cannot start nginx using command \"$cmd\" (status code $status).")
            if $waited >= 30;
    }
    sleep $TestNginxSleep;
}

# As the real runner does: nginx (daemon off) under valgrind's memcheck, in a
# child process leading its own process group; the block's requests retry
# connecting until it listens.  The block's name goes to stderr first, so
# valgrind's reports that follow are known to be this block's.
sub valgrind_command {
    my $cmd = shift;
    return "valgrind -q $UseValgrind $cmd" if $UseValgrind !~ /^\d+$/;
    my $opts = '--tool=memcheck --leak-check=full --keep-debuginfo=yes --show-possibly-lost=no';
    if ($ValgrindExitOnFirstErr) {
        if (`valgrind --help` =~ /exit-on-first-error/) {
            $opts .= ' --exit-on-first-error=yes --error-exitcode=1';
        } else {
            warn "WARNING: valgrind does not support --exit-on-first-error option\n";
        }
    }
    # valgrind.suppress in the current directory, as the real runner reads it
    my $supp = -f 'valgrind.suppress' ? ' --suppressions=valgrind.suppress' : '';
    return "valgrind --num-callers=100 -q $opts --gen-suppressions=all$supp $cmd";
}

sub start_nginx_under_valgrind {
    my ($name, $cmd) = @_;
    $cmd = valgrind_command($cmd);
    warn "$name\n";
    $AnnouncedName = $name;
    warn "command: $cmd\n" if $Verbose;
    my $pid = fork;
    bail_out("$name - fork() failed: $!") unless defined $pid;
    if ($pid == 0) {
        setpgrp;
        open STDERR, '>>', $ValgrindLog or POSIX::_exit(127);
        exec "exec $cmd" or POSIX::_exit(127);
    }
    $ChildPid = $pid;
    sleep $TestNginxSleep;
}

# Valgrind mode without HUP: the real runner stops nginx after every block.
# QUIT until the pid file is gone (21 tries, sleep_time() apart), then up to
# a second for the master to exit; KILL of the process group otherwise.
sub stop_nginx_after_block {
    my $name = shift;
    return unless -f $PidFile;
    my $pid = read_pid_file($name);
    if (!is_running($pid)) {
        unlink $PidFile;
        return;
    }
    for my $try (0 .. 20) {
        kill SIGQUIT, $pid
            or warn "$name - Failed to send quit signal to the nginx process with PID $pid\n";
        sleep $TestNginxSleep;
        next if -f $PidFile;
        my $left = 1.0;
        while ($left > 0 && is_running($pid)) {
            waitpid $pid, WNOHANG;
            sleep 0.05;
            $left -= 0.05;
        }
        if (is_running($pid)) {
            warn "$name - timeout when waiting for the process $pid to exit\n";
            kill SIGKILL, $pid;
            waitpid $pid, 0;
        }
        return;
    }
    # The real runner kills silently here; say so, since the reports of the
    # processes killed are lost (TEST_NGINX_SLEEP gives nginx more time).
    warn "WARNING: $name - nginx did not quit within 21 x TEST_NGINX_SLEEP "
        . "($TestNginxSleep s); killing its process group\n";
    kill SIGKILL, -$pid;
    waitpid $pid, 0;
    unlink $PidFile if -f $PidFile;
}

# What valgrind wrote since the last call: copied to stderr, where the real
# runner leaves it, and counted.  With -q valgrind writes nothing but its
# reports; each starts with a line "==PID== What" (details are indented,
# "Warning:" lines are not errors).  Any report fails the block.
sub check_valgrind_output {
    my $name = shift;
    return unless defined $ValgrindLog;
    open my $in, '<', $ValgrindLog or return;
    seek $in, $ValgrindLogPos, 0;
    my $text = do { local $/; <$in> } // '';
    $ValgrindLogPos = tell $in;
    close $in;
    return if $text eq '';
    # a block that reuses a running nginx has not said its name yet
    print STDERR "$name\n" if $AnnouncedName ne $name;
    $AnnouncedName = $name;
    print STDERR $text;
    my @reports = grep { !/^==\d+== Warning:/ } $text =~ /^(==\d+== \S[^\n]*)$/mg;
    return unless @reports;
    Test::More::fail("$name - valgrind reported " . scalar(@reports)
                     . " error(s), first: $reports[0]");
}

sub can_run {
    my $cmd = shift;
    return -f $cmd && -x _ if $cmd =~ m{/};
    return grep { length && -f "$_/$cmd" && -x _ } split /:/, $ENV{PATH} // '';
}

# HUP mode: rewrite everything, make nginx reopen its logs (USR1) and reload
# (HUP).  Returns false if signalling failed, so the caller restarts instead.
sub reload_nginx {
    my ($block, $config, $pid) = @_;
    my $name = $block->name;
    prepare_server_root($block, $config, 0);
    if (!kill 'USR1', $pid) {
        warn "$name - Failed to send USR1 signal\n";
        return 0;
    }
    sleep $TestNginxSleep;
    return 0 unless kill 'HUP', $pid;
    sleep $TestNginxSleep * 3;
    if ($UseValgrind) {
        warn "$name\n";
        $AnnouncedName = $name;
    }
    if (defined $block->reload_fails) {
        sleep 0.3;
    } else {
        wait_for_config_version($name);
    }
    return 1;
}

# Poll the /ver server until it returns this block's token 20 times in a
# row, i.e. until no old-generation worker answers any more.
sub wait_for_config_version {
    my $name = shift;
    my ($total, $nsucc) = (200, 0);
    my $req = "GET /ver HTTP/1.1\r\nHost: Test-Nginx\r\nConnection: close\r\n\r\n";
    for my $try (1 .. $total) {
        my ($resp) = Test::Nginx::Socket::http_exchange($ServerAddr, $ServerPort,
            [{ value => $req }], undef, 2);
        my $ver = defined $resp && $resp =~ /\r\n\r\n(.*)\z/s ? $1 : '';
        if ($ver eq $ConfigVersion) {
            $nsucc++;
            sleep $TestNginxSleep if $nsucc == 5;
            return if $nsucc >= 20;
            next;
        }
        $nsucc = 0;
        my $wait = min(1, ($TestNginxSleep + $TestNginxSleep * $try) * $try / 2);
        warn "$name - waiting $wait sec for nginx to reload the configuration\n"
            if $wait > 0.5;
        sleep $wait;
    }
    Test::More->builder->no_ending(1);
    Test::More::fail("$name - failed to reload configuration after $total failed test requests");
}

# (Re)start or reload nginx for a block.  Returns false when the block is
# fully handled already (must_die).
sub restart_nginx {
    my ($block, $config, $first_time) = @_;
    my $name = $block->name;
    $ConfigVersion = join '', map { ('A'..'Z', 'a'..'z', 0..9)[rand 62] } 1 .. 10
        if $UseHup;

    my $pid = -f $PidFile ? read_pid_file($name) : undef;
    if ($pid && is_running($pid)) {
        if ($UseHup && !$first_time) {
            return 1 if reload_nginx($block, $config, $pid);
        }
        kill_process($pid, $name);
    } elsif (defined $pid && $pid ne '') {
        unlink $PidFile;    # stale
    }

    prepare_server_root($block, $config, $first_time);
    if (defined(my $must_die = $block->must_die)) {
        run_must_die($block, $must_die);
        return 0;
    }
    start_nginx($block);
    return 1;
}

#--- blocks -------------------------------------------------------------------

# --- skip_eval: N: perl-code / --- skip_nginx: N: <op> x.y.z [: reason]
# Returns (number of tests to skip, reason) when the block is to be skipped.
sub skip_spec {
    my $block = shift;
    my $name = $block->name;
    my ($n, $reason, $skip);
    if (defined(my $spec = $block->skip_eval)) {
        if ($spec =~ /^\s*(\d+)\s*:\s*(.*)/s) {
            my $code = $2;
            ($n, $reason) = ($1, 'skip_eval');
            $skip = eval $code;
            bail_out("$name - skip_eval - failed to eval the Perl code \"$code\": $@") if $@;
        }
    }
    if (defined(my $spec = $block->skip_nginx)) {
        $spec =~ /^\s*(\d+)\s*:\s*([<>]=?)\s*(\d+)\.(\d+)\.(\d+)(?:\s*:\s*(.*))?\s*$/
            or bail_out("$name - Invalid --- skip_nginx spec: $spec");
        $n = $1;
        $reason = $6 || "nginx version $2 $3.$4.$5";
        my $want = canon_version($3, $4, $5);
        $skip = 1 if eval "$NginxVersion $2 $want";
    }
    return $skip && defined $n ? ($n, $reason // 'various reasons') : ();
}

sub run_block {
    my $block = shift;
    my $name = $block->name;
    return if defined $block->SKIP;

    for my $section (@Unsupported) {
        bail_out("$name - section --- $section is not supported by the fallback "
                 . "Test::Nginx runner (t/lib/fallback); install Test::Nginx from CPAN")
            if defined $block->$section;
    }

    my $first_time = $FirstTime;
    $FirstTime = 0;
    $LastBlockName = $name;
    %RandPorts = ();
    my $config = expand_env_in_text($block->config, $name);

    local $LogLevel = $block->log_level || $LogLevel;
    # must_die ignores HUP and valgrind modes, as in the real runner
    local $UseHup = defined $block->must_die ? 0 : $UseHup;
    local $UseValgrind = defined $block->must_die ? 0 : $UseValgrind;
    my ($skip_n, $skip_reason) = skip_spec($block);

    # Without --- config a block reuses the previous block's running nginx.
    my $restart = 0;
    if (defined $config) {
        $restart = $ForceRestartOnTest || !defined $PrevConfig || $config ne $PrevConfig;
    } elsif (!defined $PrevConfig) {
        bail_out("$name - No '--- config' section specified and could not get previous one.");
    }

    if ($restart && !defined $skip_n) {
        $PrevConfig = $config;
        restart_nginx($block, $config, $first_time) or return;
    }

    if (defined(my $init = $block->init)) {
        eval $init;
        bail_out("$name - init failed: $@") if $@;
    }

    $ErrLogFilePos = 0;
    for my $i (0 .. $RepeatEach - 1) {
        warn "Run the test block $name ...\n" if $Verbose;
        if (defined $skip_n) {
            SKIP: { Test::More::skip("$name - $skip_reason", $skip_n) }
        } else {
            $RunTestHelper->($block, $i);
        }
    }

    if ($UseValgrind) {
        stop_nginx_after_block($name) unless $UseHup;
        check_valgrind_output($name);
    }
}

sub run_tests () {
    srand($$ ^ int(Time::HiRes::time() * 1e6));
    $NginxVersion = nginx_version();
    $ENV{TEST_NGINX_SERVER_PORT} //= $ServerPort;

    my @blocks = Test::Base::blocks();
    @blocks = shuffle @blocks unless $NoShuffle;
    for my $block (@blocks) {
        $_->($block) for @BlockPreprocessors;
        $block->set_value(name => "$0 " . $block->name);
        run_block($block);
        $_->($block) for @TestCleanupHandlers;
    }
    cleanup();
}

sub cleanup {
    $_->() for @CleanupHandlers;
    # nginx under valgrind (HUP mode keeps it running to the end)
    if (defined $ChildPid) {
        kill_process($ChildPid, 'cleanup') if is_running($ChildPid);
        undef $ChildPid;
    }
}

END {
    local $?;    # keep the test script's exit status
    cleanup();
    if (($UseValgrind || !$ENV{TEST_NGINX_NO_CLEAN}) && -f $PidFile) {
        my $pid = read_pid_file('END');
        if (is_running($pid)) {
            kill_process($pid, 'END');
        } else {
            unlink $PidFile;
        }
    }
    # reports written as nginx stopped (at the end of a HUP mode run)
    check_valgrind_output($LastBlockName) if $UseValgrind;
    remove_tree($ServRoot) if $Randomize && $ServRoot =~ m{/t/servroot_\d+$};
}

1;
