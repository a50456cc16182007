"""First-party hardware plugins: the five device classes qres ships profiles for.

Every default below is a published figure for the named part, or an estimate marked as such;
``docs/hardware.md`` gives each number's source (document, section or table) and how the
estimates were derived. Powers are per component (CPU, radio) in mW.
"""

from __future__ import annotations

from qres.kernel.config import one_of
from qres.kernel.hookspecs import hookimpl
from qres.kinds.hardware import GiB, Hardware, KiB, MiB, hardware_config


class Esp32C6(Hardware):
    """Espressif ESP32-C6: 160 MHz RISC-V, 512 KB HP SRAM, Wi-Fi 6 with target wake time."""

    name = "esp32-c6"
    part = "Espressif ESP32-C6 (ESP32-C6-DevKitC-1, ESP32-C6-WROOM-1-N8 module, 8 MB flash)"
    Config = hardware_config(
        "Esp32C6Config",
        ram_bytes=512 * KiB,  # datasheet: 512 KB HP SRAM (LP SRAM 16 KB not counted)
        reserved_ram_bytes=256 * KiB,  # estimate: ESP-IDF, FreeRTOS, lwIP, Wi-Fi buffers, IRAM
        flash_bytes=8 * MiB,  # WROOM-1-N8 module
        eeprom_bytes=0,
        word_bits=32,
        clock_hz=160_000_000,
        cores=1,  # the HP core; the 20 MHz LP core does not run qres
        cpu_active_mw=120.0,  # design figure; ~36 mA x 3.3 V, modem-sleep with the HP CPU running
        cpu_sleep_mw=0.1155,  # light-sleep 35 uA x 3.3 V
        radio_active_mw=230.0,  # design figure; ~70 mA x 3.3 V, Wi-Fi receive
        radio_sleep_mw=35.0,  # design figure; ~10.6 mA x 3.3 V, radio off in modem-sleep
        wake_latency_us=1_000,  # estimate: light-sleep exit
        radio="wifi6",
        twt_supported=True,
        beacon_interval_us=102_400,  # 802.11 default beacon interval: 100 TU
        beacon_listen_us=860,  # derived from ESP-IDF light-sleep DTIM1 currents
    )


class ArduinoMega(Hardware):
    """Arduino Mega 2560 (ATmega2560): 8-bit AVR at 16 MHz, 8 KB SRAM, no radio."""

    name = "arduino-mega"
    part = "Arduino Mega 2560 Rev3 (Microchip ATmega2560 at 16 MHz, 5 V)"
    Config = hardware_config(
        "ArduinoMegaConfig",
        ram_bytes=8 * KiB,
        reserved_ram_bytes=2 * KiB,  # estimate: Arduino core globals, Serial buffers, stack
        flash_bytes=256 * KiB,  # 8 KB of it holds the bootloader
        eeprom_bytes=4 * KiB,
        word_bits=8,
        clock_hz=16_000_000,
        cores=1,
        cpu_active_mw=100.0,  # estimate: 10 mA typ at 8 MHz/5 V, scaled to 16 MHz, x 5 V
        cpu_sleep_mw=0.075,  # power-down with watchdog, 15 uA max x 5 V
        radio_active_mw=0.0,
        radio_sleep_mw=0.0,
        wake_latency_us=1_024,  # 16K CK crystal start-up from power-down at 16 MHz
        radio="none",
        twt_supported=False,
        beacon_interval_us=0,
        beacon_listen_us=0,
    )


class CortexA55(Hardware):
    """A quad Cortex-A55 Linux board: Rockchip RK3566 at 1.8 GHz (Orange Pi 3B, 4 GB)."""

    name = "cortex-a55"
    part = "Orange Pi 3B (Rockchip RK3566, 4x Cortex-A55 at 1.8 GHz, 4 GB LPDDR4)"
    Config = hardware_config(
        "CortexA55Config",
        validators={"ram_bytes": one_of(2 * GiB, 4 * GiB, 8 * GiB)},
        ram_bytes=4 * GiB,  # sold with 2, 4 or 8 GB
        reserved_ram_bytes=256 * MiB,  # estimate: kernel, CMA, minimal Debian userspace
        flash_bytes=0,  # OS on microSD/eMMC, not execute-in-place flash
        eeprom_bytes=0,
        word_bits=64,
        clock_hz=1_800_000_000,
        cores=4,
        cpu_active_mw=4_000.0,  # estimate: board under CPU load
        cpu_sleep_mw=1_500.0,  # estimate: board idle
        radio_active_mw=700.0,  # estimate: Wi-Fi 5 module transmitting/receiving
        radio_sleep_mw=20.0,  # estimate: Wi-Fi power save between beacons
        wake_latency_us=10,  # estimate: WFI idle exit (no deeper idle state in rk356x.dtsi)
        radio="wifi5",
        twt_supported=False,
        beacon_interval_us=102_400,
        beacon_listen_us=2_000,  # estimate
    )


class RaspberryPi4(Hardware):
    """Raspberry Pi 4 Model B: BCM2711, 4x Cortex-A72, 1/2/4/8 GB LPDDR4, Wi-Fi 5."""

    name = "rpi4"
    part = "Raspberry Pi 4 Model B (Broadcom BCM2711, 4x Cortex-A72 at 1.5 GHz)"
    Config = hardware_config(
        "RaspberryPi4Config",
        validators={"ram_bytes": one_of(1 * GiB, 2 * GiB, 4 * GiB, 8 * GiB)},
        ram_bytes=4 * GiB,  # RAM variant: 1, 2, 4 or 8 GB
        reserved_ram_bytes=256 * MiB,  # 76 MB gpu_mem default + estimate for OS
        flash_bytes=0,  # boots from microSD/USB; the SPI EEPROM holds only the bootloader
        eeprom_bytes=0,
        word_bits=64,
        clock_hz=1_500_000_000,  # 1.8 GHz on boards from rev 1.4 on: override clock_hz
        cores=4,
        cpu_active_mw=3_000.0,  # 600 mA typical bare-board active current x 5 V
        cpu_sleep_mw=1_600.0,  # measured idle at the wall (sbc-reviews #4)
        radio_active_mw=700.0,  # estimate: CYW43455 transmitting/receiving
        radio_sleep_mw=20.0,  # estimate: Wi-Fi power save between beacons
        wake_latency_us=10,  # estimate: WFI idle exit (no suspend-to-RAM on the Pi)
        radio="wifi5",
        twt_supported=False,
        beacon_interval_us=102_400,
        beacon_listen_us=2_000,  # estimate
    )


class X86Server(Hardware):
    """An x86-64 server: AMD EPYC 7313P (16 cores, 3.0 GHz, 155 W TDP) with 256 GB DDR4."""

    name = "x86-server"
    part = "1-socket server, AMD EPYC 7313P (Zen 3, 16C/32T, 3.0/3.7 GHz), 8x 32 GB DDR4-3200"
    Config = hardware_config(
        "X86ServerConfig",
        ram_bytes=256 * GiB,
        reserved_ram_bytes=8 * GiB,  # estimate: OS, services, page-cache headroom
        flash_bytes=0,
        eeprom_bytes=0,
        word_bits=64,
        clock_hz=3_000_000_000,
        cores=16,
        cpu_active_mw=155_000.0,  # default TDP
        cpu_sleep_mw=50_000.0,  # estimate: package power at idle
        radio_active_mw=5_000.0,  # estimate: dual-port 10GBASE-T NIC, link active
        radio_sleep_mw=2_000.0,  # estimate: NIC with links idle (EEE)
        wake_latency_us=100,  # estimate: deepest C-state exit
        radio="ethernet",
        twt_supported=False,
        beacon_interval_us=0,
        beacon_listen_us=0,
    )


HARDWARE = (Esp32C6, ArduinoMega, CortexA55, RaspberryPi4, X86Server)


@hookimpl
def register_hardware(register):
    """Register the five first-party device plugins."""
    for cls in HARDWARE:
        register(cls)
