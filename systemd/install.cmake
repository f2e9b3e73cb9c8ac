# Runs at `cmake --install` time (install(SCRIPT) in cli/CMakeLists.txt), when
# the prefix is known, so the units and the mount helper name the binary where
# it was installed. Set by the caller: BCFS_SOURCE_DIR, BCFS_STAGE_DIR,
# BCFS_INSTALL_BINDIR, BCFS_SYSTEMD_UNIT_DIR, BCFS_TMPFILES_DIR,
# BCFS_MOUNT_HELPER_DIR, BCFS_DOC_DIR (relative = under the prefix).
function(bcfs_abs out dir)
  if(IS_ABSOLUTE "${dir}")
    set(${out} "${dir}" PARENT_SCOPE)
  else()
    set(${out} "${CMAKE_INSTALL_PREFIX}/${dir}" PARENT_SCOPE)
  endif()
endfunction()

bcfs_abs(BCFS_BINDIR "${BCFS_INSTALL_BINDIR}")
bcfs_abs(unit_dir "${BCFS_SYSTEMD_UNIT_DIR}")
bcfs_abs(tmpfiles_dir "${BCFS_TMPFILES_DIR}")
bcfs_abs(helper_dir "${BCFS_MOUNT_HELPER_DIR}")
bcfs_abs(doc_dir "${BCFS_DOC_DIR}")

foreach(unit buildcachefs.service buildcachefs@.service)
  configure_file("${BCFS_SOURCE_DIR}/systemd/${unit}.in" "${BCFS_STAGE_DIR}/${unit}" @ONLY)
endforeach()
configure_file("${BCFS_SOURCE_DIR}/scripts/mount.fuse.buildcachefs"
               "${BCFS_STAGE_DIR}/mount.fuse.buildcachefs" @ONLY)

file(INSTALL "${BCFS_STAGE_DIR}/buildcachefs.service" "${BCFS_STAGE_DIR}/buildcachefs@.service"
     DESTINATION "${unit_dir}")
file(INSTALL "${BCFS_SOURCE_DIR}/systemd/tmpfiles.d/buildcachefs.conf"
     DESTINATION "${tmpfiles_dir}")
file(INSTALL "${BCFS_SOURCE_DIR}/systemd/buildcachefs.toml" DESTINATION "${doc_dir}")
file(INSTALL "${BCFS_STAGE_DIR}/mount.fuse.buildcachefs" DESTINATION "${helper_dir}"
     FILE_PERMISSIONS OWNER_READ OWNER_WRITE OWNER_EXECUTE GROUP_READ GROUP_EXECUTE
                      WORLD_READ WORLD_EXECUTE)
# `-t buildcachefs` runs mount.buildcachefs.
message(STATUS "Installing: $ENV{DESTDIR}${helper_dir}/mount.buildcachefs")
file(CREATE_LINK mount.fuse.buildcachefs "$ENV{DESTDIR}${helper_dir}/mount.buildcachefs" SYMBOLIC)
